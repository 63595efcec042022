import Glibc

/// The one way tests run a program: posix_spawn with a PATH lookup that also searches /usr/sbin and
/// /sbin (mkfs.*, fsck.*, losetup), stdin from a file or /dev/null, and its output collected.
public enum Subprocess {
    public enum Output: Sendable {
        /// stdout and stderr together, in the order written.
        case merged
        /// stdout only; stderr goes where the test's goes.
        case stdoutOnly
        /// Neither (the result's output is empty).
        case discarded
    }

    /// Runs `argv`; returns its exit status (-1 when it could not run or was killed by a signal) and what
    /// it printed. `environment` adds to (or overrides) the test's own.
    @discardableResult
    public static func run(_ argv: [String], output: Output = .merged, stdin: String? = nil,
                           environment: [String: String] = [:]) -> (status: Int32, output: String) {
        guard let program = argv.first else { return (-1, "no program") }
        var pipeFDs: [Int32] = [-1, -1]
        guard output == .discarded || pipe(&pipeFDs) == 0 else { return (-1, "pipe failed") }
        // Close-on-exec, so that programs other tests spawn meanwhile do not keep this pipe open (glibc's
        // pipe2 is not visible to Swift here); the dup2 below clears the flag on the child's 1 and 2.
        for fd in pipeFDs where fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin ?? "/dev/null", O_RDONLY, 0)
        switch output {
        case .merged:
            posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
            posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 2)
        case .stdoutOnly:
            posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
        case .discarded:
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        var variables = currentEnvironment()
        variables["PATH"] = searchPath
        variables.merge(environment) { $1 }
        var env: [UnsafeMutablePointer<CChar>?] = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { (cArgs + env).forEach { free($0) } }
        var pid: pid_t = 0
        // posix_spawnp looks PATH up in the caller's environment, not the child's: give it the full path.
        let path = program.contains("/") ? program : (lookup(program) ?? program)
        let rc = posix_spawn(&pid, path, &actions, nil, &cArgs, &env)
        if output != .discarded { close(pipeFDs[1]) }
        defer { if output != .discarded { close(pipeFDs[0]) } }
        guard rc == 0 else { return (-1, "cannot run \(program): \(String(cString: strerror(rc)))") }
        var collected: [UInt8] = []
        if output != .discarded {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(pipeFDs[0], &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                collected += buffer[0..<n]
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 { guard errno == EINTR else { return (-1, "waitpid failed") } }
        return ((status & 0x7f) == 0 ? (status >> 8) & 0xff : -1, String(decoding: collected, as: UTF8.self))
    }

    /// Whether `name` is an executable in the search path.
    public static func exists(_ name: String) -> Bool { lookup(name) != nil }

    static var searchPath: String {
        (getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    }

    static func lookup(_ name: String) -> String? {
        searchPath.split(separator: ":").lazy.map { "\($0)/\(name)" }.first { access($0, X_OK) == 0 }
    }

    static func currentEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            entry += 1
        }
        return result
    }
}
