import ArgumentParser
import Glibc
import SandboxRun

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command (default: root's login shell) as root inside a sandbox, with /proc, /sys, /dev and /run set up.",
        discussion: "Exits with the command's status (128+N when signal N killed it; 125 when the sandbox could not be set up). Nothing of the run outlives it.")

    @Argument(help: "The sandbox's directory: MOUNTPOINT/IMAGE/sandboxes/NAME.")
    var sandbox: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after an optional --).")
    var command: [String] = []

    func run() throws {
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
        do {
            let status = try SandboxRunner.run(RunRequest(sandbox: sandbox, command: argv))
            throw ExitCode(status)
        } catch let error as RunError {
            SandboxRunner.report("imgsandbox run: \(error)\n")
            throw ExitCode(SandboxRunner.setupFailed)
        }
    }
}
