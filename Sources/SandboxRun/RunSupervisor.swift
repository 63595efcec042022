import CLinux
import Glibc
import LinuxBlock

/// bwrap's --json-status-fd: one JSON object per line, `{"child-pid": N ...}` once the sandbox is set up
/// (N: bwrap's PID 1 of the new PID namespace, as seen from here) and `{"exit-code": N}` when it ends.
/// A run with no exit-code never started the command (bwrap said why on stderr).
final class StatusPipe {
    private let readEnd: FileDescriptor
    /// Ours until bwrap is started, then only bwrap's.
    private var writeEnd: FileDescriptor?
    var readEndNumber: Int32 { readEnd.raw }
    var writeEndNumber: Int32 { writeEnd?.raw ?? -1 }
    private var text: [UInt8] = []
    private(set) var namespaceInit: pid_t?
    private(set) var exitCode: Int32?
    private(set) var open = true

    init() throws(RunError) {
        let pipe: Pipe
        do { pipe = try FileDescriptor.pipe(naming: "bwrap status") } catch { throw RunError(error) }
        readEnd = pipe.read
        writeEnd = .some(pipe.write)
    }

    func closeWriteEnd() {
        writeEnd = nil
    }

    func readAvailable() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { read(readEnd.raw, $0.baseAddress, $0.count) }
        if count < 0, errno == EINTR { return }
        guard count > 0 else { open = false; return }
        text += buffer[0..<count]
        while let newline = text.firstIndex(of: 0x0a) {
            let line = String(decoding: text[..<newline], as: UTF8.self)
            text.removeSubrange(...newline)
            if let pid = Self.number("child-pid", in: line) { namespaceInit = pid_t(pid) }
            if let code = Self.number("exit-code", in: line) { exitCode = Int32(truncatingIfNeeded: code) }
        }
    }

    /// The integer after `"key":` in one line of bwrap's JSON (its fixed, flat format).
    static func number(_ key: String, in line: String) -> Int? {
        let parts = line.split(separator: "\"\(key)\"", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let rest = parts[1].drop { $0 == " " || $0 == ":" }
        return Int(rest.prefix { $0.isNumber })
    }
}

/// Waits for bwrap while relaying the terminal and passing on the signals a user sends to `run`.
final class RunSupervisor {
    /// Signals that go on to the command (sent to run by a process, or by its terminal when there is no relay).
    static let forwarded: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT]
    let relay: TerminalRelay?
    let status: StatusPipe
    private var blocked = sigset_t()
    private var previous = sigset_t()
    private var signalFD: FileDescriptor?
    private var signals: Int32 { signalFD?.raw ?? -1 }

    init(relay: TerminalRelay?, status: StatusPipe) {
        self.relay = relay
        self.status = status
    }

    func blockSignals() throws(RunError) {
        sigemptyset(&blocked)
        for signal in Self.forwarded + [SIGCHLD, SIGWINCH] { sigaddset(&blocked, signal) }
        sigprocmask(SIG_BLOCK, &blocked, &previous)
        let fd = clinux_signalfd(&blocked)
        guard fd >= 0 else {
            let saved = errno
            unblockSignals()
            throw RunError(SystemError("signalfd", "run", errno: saved))
        }
        signalFD = FileDescriptor(adopting: fd)
    }

    func unblockSignals() {
        signalFD = nil
        sigprocmask(SIG_SETMASK, &previous, nil)
    }

    /// Returns the command's exit status (128+N for signal N), or 125 when bwrap could not start it.
    func supervise(bwrap: pid_t) -> Int32 {
        relay?.start()
        defer {
            relay?.restore()
            unblockSignals()
        }
        var bwrapStatus: Int32?
        while bwrapStatus == nil || status.open || (relay?.outputOpen ?? false) {
            var entries = [pollfd(fd: signals, events: Int16(POLLIN), revents: 0)]
            if status.open { entries.append(pollfd(fd: status.readEndNumber, events: Int16(POLLIN), revents: 0)) }
            entries += relay?.pollEntries ?? []
            if poll(&entries, nfds_t(entries.count), -1) < 0 {
                if errno == EINTR { continue }
                break
            }
            for entry in entries where entry.revents != 0 {
                if entry.fd == signals {
                    let signal = clinux_read_signal(signals)
                    if signal == SIGCHLD, bwrapStatus == nil {
                        var raw: Int32 = 0
                        if waitpid(bwrap, &raw, WNOHANG) == bwrap { bwrapStatus = raw }
                    } else if signal == SIGWINCH {
                        relay?.copyWindowSize()
                    } else if signal > 0, signal != SIGCHLD {
                        forward(signal, bwrap: bwrap)
                    }
                } else if entry.fd == status.readEndNumber {
                    status.readAvailable()
                } else {
                    relay?.handle(entry)
                }
            }
        }
        if let code = status.exitCode { return code }
        if let raw = bwrapStatus, raw & 0x7f != 0 { return SandboxRunner.exitStatus(raw) }
        return SandboxRunner.setupFailed
    }

    /// To the command (the only child of bwrap's PID 1 it started; orphans it adopts come later in the
    /// list), or to bwrap before the command exists (bwrap dies, and --die-with-parent takes the rest).
    func forward(_ signal: Int32, bwrap: pid_t) {
        if let initPID = status.namespaceInit, let command = Self.firstChild(of: initPID) {
            kill(command, signal)
        } else {
            kill(bwrap, signal)
        }
    }

    static func firstChild(of pid: pid_t) -> pid_t? {
        guard let fd = try? FileDescriptor.open("/proc/\(pid)/task/\(pid)/children", O_RDONLY) else { return nil }
        let text = String(decoding: ImageRoot.readAll(fd, limit: 4096), as: UTF8.self)
        return text.split(separator: " ").first.flatMap { pid_t($0) }
    }
}
