import ArgumentParser
import FoundationEssentials
import Glibc
import PrintableText
import Sandbox
import SandboxSave

struct Save: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a sandbox as a new disk image: the image with the sandbox's changes.",
        discussion: "The output is sparse, written to OUT.partial and renamed into place; the source image and the sandbox are unchanged. While the changes are copied the sandbox's writes wait.")

    @Argument(help: "The sandbox: MOUNTPOINT/IMAGE/sandboxes/NAME.")
    var sandboxDirectory: String
    @Argument(help: "The new image file.")
    var output: String
    @Flag(help: "Replace OUT if it exists.")
    var force = false
    @Flag(help: "Make the root partition as small as its content plus a margin.")
    var shrink = false
    @Flag(help: "No progress output.")
    var quiet = false

    func run() throws {
        let target = try SandboxTarget.resolve(sandboxDirectory)
        let absolute = output.hasPrefix("/") ? output : FileManager.default.currentDirectoryPath + "/" + output
        let mask = umask(0)
        umask(mask)
        let request = ControlRequest(command: "save", image: target.image, sandbox: target.sandbox, output: absolute,
                                     force: force, shrink: shrink, umask: UInt32(mask))
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let meter = ProgressMeter(quiet: quiet)
        var outcome: SaveLine?
        try ControlSocket.stream(target.socketPath, request: try JSONEncoder().encode(request)) { data in
            let line = try decoder.decode(SaveLine.self, from: data)
            if let progress = line.progress { meter.show(progress) } else { outcome = line }
        }
        meter.finish()
        guard let result = outcome?.result else {
            throw ValidationFailure("save \(PathText.escape(sandboxDirectory)): \(outcome?.error ?? "the daemon ended the connection")")
        }
        if !quiet {
            print("saved \(PathText.escape(result.output)): \(ByteSize.format(result.sizeBytes)) (\(ByteSize.format(result.allocatedBytes)) allocated), \(result.changes) changes, \(tenths(result.seconds)) s")
        }
    }
}

/// Progress on stderr: one line redrawn in place on a terminal; otherwise a line per phase and per 10 %.
final class ProgressMeter {
    private let quiet: Bool
    private let terminal = isatty(STDERR_FILENO) == 1
    private var phase = ""
    private var phaseStart = ContinuousClock.now
    private var lastTenth = -1
    private var drawn = false

    init(quiet: Bool) { self.quiet = quiet }

    func show(_ progress: SaveProgress) {
        guard !quiet else { return }
        if progress.phase != phase {
            phase = progress.phase
            phaseStart = .now
            lastTenth = -1
        }
        let fraction = progress.totalBytes == 0 ? 1 : Double(progress.doneBytes) / Double(progress.totalBytes)
        let elapsed = SaveJob.seconds(phaseStart.duration(to: .now))
        var text = "\(phase): \(Int(fraction * 100))%"
        if phase == "copy" {
            let rate = elapsed > 0 ? Double(progress.doneBytes) / elapsed / 1_048_576 : 0
            let eta = rate > 0 ? Double(progress.totalBytes - progress.doneBytes) / 1_048_576 / rate : 0
            text += "  \(Int(rate.rounded())) MiB/s  ETA \(Int(eta.rounded())) s"
        } else {
            text += "  \(progress.doneBytes)/\(progress.totalBytes)"
        }
        if terminal {
            FileHandleOutput.stderr("\r\u{1b}[K" + text)
            drawn = true
        } else if Int(fraction * 10) != lastTenth {
            lastTenth = Int(fraction * 10)
            FileHandleOutput.stderr(text + "\n")
        }
    }

    func finish() {
        if drawn { FileHandleOutput.stderr("\n") }
    }
}

/// 12.3 for 12.345.
func tenths(_ value: Double) -> String {
    let scaled = Int((value * 10).rounded())
    return "\(scaled / 10).\(scaled % 10)"
}

enum FileHandleOutput {
    static func stderr(_ text: String) {
        _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }
}
