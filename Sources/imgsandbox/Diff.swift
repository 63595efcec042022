import ArgumentParser
import FoundationEssentials
import PrintableText
import SandboxDiff

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List what a sandbox changed: added, deleted and modified paths.",
        discussion: "One line per path, sorted: `added PATH`, `deleted PATH`, `modified ASPECTS PATH` (ASPECTS: type, content, link_target, links, mode, owner, times, xattrs), `unreadable PATH` (a corrupt FAT entry of the image). Bytes outside printable ASCII are shown as \\xNN.")

    @Argument(help: "The sandbox: MOUNTPOINT/IMAGE/sandboxes/NAME.")
    var sandboxDirectory: String

    @Flag(help: "Print a JSON array of {path, change, aspects}.")
    var json = false

    func run() throws {
        let target = try SandboxTarget.resolve(sandboxDirectory)
        let request = ControlRequest(command: "diff", image: target.image, sandbox: target.sandbox)
        let data = try ControlSocket.query(target.socketPath, request: try JSONEncoder().encode(request))
        let answer = try StatusRow.decoder.decode(DiffAnswer.self, from: data)
        guard let changes = answer.changes else {
            throw ValidationFailure("diff \(PathText.escape(sandboxDirectory)): \(answer.error ?? "no answer")")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(changes), as: UTF8.self))
        } else {
            for change in changes { print(change.line) }
        }
    }
}
