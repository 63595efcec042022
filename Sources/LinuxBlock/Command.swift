import CLinux
import Glibc

/// A helper program that failed: its argv, exit status (128+signal if killed, 127 if it could not start)
/// and the tail of its stderr.
public struct CommandError: Error, Sendable, CustomStringConvertible {
    public let argv: [String]
    public let status: Int32
    public let stderr: String

    public init(argv: [String], status: Int32, stderr: String) {
        self.argv = argv
        self.status = status
        self.stderr = stderr
    }

    public var description: String {
        let tail = stderr.isEmpty ? "" : ": \(stderr)"
        return "\(argv.joined(separator: " ")) exited with status \(status)\(tail)"
    }
}

/// Runs helper programs (mkfs.ext4 ...) without a shell.
public enum Command {
    /// How much of stderr a CommandError keeps (the end is where tools say what went wrong).
    static let stderrTail = 4096

    /// posix_spawnp with stdin from /dev/null, waits, returns stdout; throws CommandError on a non-zero exit.
    /// `passing`: fds the child gets as 3, 4, ... (a file of ours it reaches as /proc/self/fd/3, never by a name).
    public static func run(_ argv: [String], passing fds: [Int32] = []) throws(CommandError) -> String {
        guard !argv.isEmpty else { throw CommandError(argv: argv, status: 127, stderr: "empty argv") }
        func failure(_ operation: String, _ code: Int32) -> CommandError {
            CommandError(argv: argv, status: 127, stderr: SystemError(operation, argv[0], errno: code).description)
        }
        let child: SpawnedChild
        do throws(SystemError) { child = try spawn(argv, passing: fds) } catch { throw failure(error.operation, error.errno) }
        let pid = child.pid

        let (stdout, stderr) = drain(child.stdout.raw, child.stderr.raw)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 {
            if errno != EINTR { throw failure("waitpid", errno) }
        }
        // WIFEXITED / WEXITSTATUS / WTERMSIG by hand: the macros do not import.
        let signal = status & 0x7f
        let code: Int32 = signal == 0 ? (status >> 8) & 0xff : 128 + signal
        guard code == 0 else {
            let text = String(decoding: stderr.suffix(stderrTail), as: UTF8.self)
            throw CommandError(argv: argv, status: code, stderr: FileIO.trimmed(text))
        }
        return String(decoding: stdout, as: UTF8.self)
    }

    /// A started child and the read ends of its stdout and stderr pipes (the caller waits for it).
    public struct SpawnedChild: ~Copyable {
        public let pid: pid_t
        public let stdout: FileDescriptor
        public let stderr: FileDescriptor
    }

    /// posix_spawnp of `argv` with stdin from /dev/null, stdout and stderr into pipes, and `fds` as 3, 4, ...;
    /// with `closingOthers` every other descriptor is closed in the child (beyond close-on-exec).
    public static func spawn(_ argv: [String], passing fds: [Int32] = [],
                             closingOthers: Bool = false) throws(SystemError) -> SpawnedChild {
        // Copies at 10 and up: the dup2s onto 3, 4 ... cannot overwrite a source not yet copied.
        var copies: [Int32] = []
        defer { copies.forEach { close($0) } }
        for fd in fds {
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, 10)
            guard copy >= 0 else { throw SystemError("fcntl(F_DUPFD_CLOEXEC)", argv[0], errno: errno) }
            copies.append(copy)
        }
        let out = try FileDescriptor.pipe(naming: argv[0])
        let err = try FileDescriptor.pipe(naming: argv[0])
        var pid: pid_t = 0
        let spawnError: Int32 = {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, out.write.raw, 1)
            posix_spawn_file_actions_adddup2(&actions, err.write.raw, 2)
            for (index, copy) in copies.enumerated() { posix_spawn_file_actions_adddup2(&actions, copy, Int32(3 + index)) }
            if closingOthers { clinux_spawn_close_from(&actions, Int32(3 + copies.count)) }
            var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
            defer { cArgs.forEach { free($0) } }
            return SpawnGate.spawning { posix_spawnp(&pid, argv[0], &actions, nil, &cArgs, clinux_environ()) }
        }()
        guard spawnError == 0 else { throw SystemError("posix_spawnp", argv[0], errno: spawnError) }
        // The write ends close here (only the child holds them now), so the reads see EOF when it exits.
        return SpawnedChild(pid: pid, stdout: out.read, stderr: err.read)
    }

    /// Reads both pipes to EOF together, so a child filling one while we block on the other cannot deadlock.
    private static func drain(_ outFD: Int32, _ errFD: Int32) -> ([UInt8], [UInt8]) {
        var output: [[UInt8]] = [[], []]
        var fds = [pollfd(fd: outFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: errFD, events: Int16(POLLIN), revents: 0)]
        var chunk = [UInt8](repeating: 0, count: 65536)
        while fds.contains(where: { $0.fd >= 0 }) {
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                break
            }
            for i in fds.indices where fds[i].fd >= 0 && fds[i].revents != 0 {
                let count = chunk.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    output[i].append(contentsOf: chunk[0..<count])
                } else if count == 0 || errno != EINTR {
                    fds[i].fd = -1  // EOF or error: stop watching (poll ignores negative fds)
                }
            }
        }
        return (output[0], output[1])
    }
}
