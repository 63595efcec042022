import CLinux
import Glibc
import LinuxBlock
import Sandbox

/// `serve` without --foreground: the same command runs again as a child in its own session; the
/// parent waits on the child's stdout (a pipe) for "ready" or an error, then exits with its verdict.
/// The child then points stdout at its log (stderr), which closes the pipe.
enum Daemon {
    static let logPath = InstanceNames.logPath

    static func startInBackground() throws {
        try RunDirectory.createRoot()
        let log = open(logPath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard log >= 0 else { throw ValidationFailure("cannot open \(logPath): \(SystemError.describe(errno))") }
        defer { close(log) }
        var pipe: [Int32] = [-1, -1]
        guard clinux_pipe_cloexec(&pipe) == 0 else { throw ValidationFailure("pipe: \(SystemError.describe(errno))") }
        defer { close(pipe[0]) }
        guard let executable = realpath("/proc/self/exe", nil) else {
            throw ValidationFailure("/proc/self/exe: \(SystemError.describe(errno))")
        }
        defer { free(executable) }
        // The serve arguments as parsed (the mount form already translated); the flag before any "--".
        let serveArguments = Imgsandbox.arguments
        let arguments = [String(cString: executable)] + serveArguments.prefix(1) + ["--daemon-child"] + serveArguments.dropFirst()
        var pid: pid_t = 0
        let spawnError: Int32 = {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, pipe[1], STDOUT_FILENO)
            posix_spawn_file_actions_adddup2(&actions, log, STDERR_FILENO)
            // Nothing else of the caller's: an inherited fd (a pipe or socket it waits on for our exit) would
            // stay open for the daemon's whole life.
            clinux_spawn_close_from(&actions, 3)
            var cArguments: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
            defer { cArguments.forEach { free($0) } }
            return posix_spawn(&pid, executable, &actions, nil, &cArguments, clinux_environ())
        }()
        close(pipe[1])
        guard spawnError == 0 else { throw ValidationFailure("spawn serve: \(SystemError.describe(spawnError))") }
        let answer = readToEnd(pipe[0])
        if answer.hasPrefix("ready") {
            print("imgsandbox serving (pid \(pid)); log: \(logPath)")
            return
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let message = String(answer.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
        throw ValidationFailure(message.isEmpty ? "serve failed (wait status \(status)); see \(logPath)" : message)
    }

    private static func readToEnd(_ fd: Int32) -> String {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 { bytes += buffer[..<count]; continue }
            if count < 0 && errno == EINTR { continue }
            return String(decoding: bytes, as: UTF8.self)
        }
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
