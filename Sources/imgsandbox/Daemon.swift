import Foundation
import Glibc

/// `serve` without --foreground: the same command runs again as a child in its own session; the
/// parent waits on the child's stdout (a pipe) for "ready" or an error, then exits with its verdict.
/// The child then points stdout at its log (stderr), which closes the pipe.
enum Daemon {
    static let logPath = RunDirectory.root + "/serve.log"

    static func startInBackground() throws {
        try RunDirectory.createRoot()
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        child.arguments = Array(CommandLine.arguments.dropFirst()) + ["--daemon-child"]
        let pipe = Pipe()
        child.standardOutput = pipe
        child.standardInput = FileHandle.nullDevice
        guard let log = FileHandle(forWritingAtPath: logPath) ?? {
            FileManager.default.createFile(atPath: logPath, contents: nil, attributes: [.posixPermissions: 0o600])
            return FileHandle(forWritingAtPath: logPath)
        }() else { throw ValidationFailure("cannot open \(logPath)") }
        log.seekToEndOfFile()
        child.standardError = log
        try child.run()
        try? pipe.fileHandleForWriting.close()
        let answer = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        if answer.hasPrefix("ready") {
            print("imgsandbox serving (pid \(child.processIdentifier)); log: \(logPath)")
            return
        }
        child.waitUntilExit()
        let message = answer.trimmingCharacters(in: .whitespacesAndNewlines)
        throw ValidationFailure(message.isEmpty ? "serve failed (exit \(child.terminationStatus)); see \(logPath)" : message)
    }

    static func reportReady() {
        let ready = "ready\n"
        _ = ready.withCString { write(STDOUT_FILENO, $0, strlen($0)) }
        dup2(STDERR_FILENO, STDOUT_FILENO)
    }

    /// Before "ready": the parent relays this as serve's error.
    static func reportFailure(_ error: any Error) {
        let message = "\(error)\n"
        _ = message.withCString { write(STDOUT_FILENO, $0, strlen($0)) }
    }
}
