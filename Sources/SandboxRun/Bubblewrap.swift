import CLinux
import Glibc
import LinuxBlock

/// How `run` starts bubblewrap (the command line itself is LinuxBlock's Bubblewrap).
extension Bubblewrap {
    static let missing = "run needs bubblewrap (the bwrap program): apt-get install bubblewrap"

    static func executable() throws(RunError) -> String {
        guard let path = installedPath else { throw RunError(missing) }
        return path
    }

    /// Starts bwrap with `environment`, in a new session. With `terminal` (a pty slave's path), the
    /// std fds listed in `onTerminal` are that terminal, which becomes the session's controlling one.
    func spawn(environment: [String], terminal: String?, onTerminal: [Int32]) throws(RunError) -> pid_t {
        let program = try Self.executable()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Above every target number, so placing one never overwrites another still to be placed.
        var high: [Int32] = []
        defer { high.forEach { close($0) } }
        for fd in passed {
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, 100)
            guard copy >= 0 else { throw RunError(SystemError("fcntl", "F_DUPFD_CLOEXEC", errno: errno)) }
            high.append(copy)
        }
        if let terminal, let first = onTerminal.first {
            // Opened by a session leader without O_NOCTTY: it becomes the controlling terminal.
            posix_spawn_file_actions_addopen(&actions, first, terminal, O_RDWR, 0)
            for fd in onTerminal.dropFirst() { posix_spawn_file_actions_adddup2(&actions, first, fd) }
        }
        for (index, fd) in high.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, Int32(3 + index)) }
        clinux_spawn_close_from(&actions, Int32(3 + high.count))
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) | clinux_POSIX_SPAWN_SETSID)
        var argv: [UnsafeMutablePointer<CChar>?] = ([program] + arguments).map { strdup($0) } + [nil]
        var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, program, &actions, &attributes, &argv, &envp)
        guard rc == 0 else { throw RunError(SystemError("posix_spawn", program, errno: rc)) }
        return pid
    }
}
