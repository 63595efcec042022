import ArgumentParser
import Glibc
import SandboxRun

extension RunNetwork: ExpressibleByArgument {}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command (default: root's login shell) as root inside a sandbox, confined (see docs/SECURITY.md).",
        discussion: "Exits with the command's status (128+N when signal N killed it; 125 when the sandbox could not be set up). Nothing of the run outlives it.")

    @Option(help: "host: the host's network (what apt needs); none: only a loopback of its own.")
    var network: RunNetwork = .host
    @Flag(help: "The image's code is trusted: keep all of root's capabilities, no system call filter, writable /proc/sys.")
    var privileged = false
    @Argument(help: "The sandbox's directory: MOUNTPOINT/IMAGE/sandboxes/NAME.")
    var sandbox: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after an optional --).")
    var command: [String] = []

    func run() throws {
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
        var request = RunRequest(sandbox: sandbox, command: argv)
        request.network = network
        request.privileged = privileged
        do {
            let status = try SandboxRunner.run(request)
            throw ExitCode(status)
        } catch let error as RunError {
            SandboxRunner.report(error.line)
            throw ExitCode(SandboxRunner.setupFailed)
        }
    }
}
