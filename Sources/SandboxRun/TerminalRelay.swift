import CLinux
import Glibc
import LinuxBlock

/// When run is used from a terminal, the command gets a pty of its own and this relays between the two:
/// the caller's terminal in raw mode (keys, ^C included, reach the pty whose line discipline turns them
/// into the command's signals), the window size copied at start and on SIGWINCH. Whatever the command
/// does to its terminal (TIOCSTI, mode changes) happens on its own pty, never on the caller's.
final class TerminalRelay {
    private let masterFD: FileDescriptor
    var master: Int32 { masterFD.raw }
    let slavePath: String
    /// The caller's std fds that are terminals: the command gets the pty in their place.
    let replaced: [Int32]
    private var saved: termios?
    private var pending: [UInt8] = []
    private(set) var inputOpen = true
    private(set) var outputOpen = true

    /// A relay when stdin is a terminal, else nil (the command then runs in a session without one).
    static func ifInteractive() throws(RunError) -> TerminalRelay? {
        guard isatty(0) == 1 else { return nil }
        var name = [CChar](repeating: 0, count: 128)
        let master = clinux_open_pty(&name, name.count)
        guard master >= 0 else { throw RunError("cannot open a pty for the command: \(SystemError.describe(errno))") }
        let replaced = [Int32(0), 1, 2].filter { isatty($0) == 1 }
        return TerminalRelay(master: master, slavePath: String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), replaced: replaced)
    }

    private init(master: Int32, slavePath: String, replaced: [Int32]) {
        masterFD = FileDescriptor(adopting: master)
        self.slavePath = slavePath
        self.replaced = replaced
        _ = fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK)
    }

    /// Where the command's output goes: the caller's stdout if it is a terminal, else its stderr.
    var output: Int32 { replaced.contains(1) ? 1 : 2 }

    func start() {
        copyWindowSize()
        var mode = termios()
        guard tcgetattr(0, &mode) == 0 else { return }
        saved = mode
        cfmakeraw(&mode)
        tcsetattr(0, TCSANOW, &mode)
    }

    func restore() {
        if var mode = saved { tcsetattr(0, TCSADRAIN, &mode) }
        saved = nil
    }

    func copyWindowSize() { _ = clinux_copy_window_size(0, master) }

    /// The poll entries the relay waits on now.
    var pollEntries: [pollfd] {
        var entries: [pollfd] = []
        if inputOpen, pending.isEmpty { entries.append(pollfd(fd: 0, events: Int16(POLLIN), revents: 0)) }
        if outputOpen {
            let events = Int16(POLLIN) | (pending.isEmpty ? 0 : Int16(POLLOUT))
            entries.append(pollfd(fd: master, events: events, revents: 0))
        }
        return entries
    }

    /// Moves what `entry` says is ready.
    func handle(_ entry: pollfd) {
        var buffer = [UInt8](repeating: 0, count: 16384)
        if entry.fd == 0, entry.revents != 0 {
            let count = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if count > 0 { pending += buffer[0..<count] } else if count == 0 || errno != EINTR { inputOpen = false }
        }
        guard entry.fd == master, entry.revents != 0 else { return }
        if entry.revents & Int16(POLLOUT) != 0, !pending.isEmpty {
            let count = pending.withUnsafeBytes { write(master, $0.baseAddress, $0.count) }
            if count > 0 { pending.removeFirst(count) }
        }
        if entry.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
            let count = buffer.withUnsafeMutableBytes { read(master, $0.baseAddress, $0.count) }
            if count > 0 {
                writeAll(output, buffer[0..<count])
            } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                outputOpen = false   // EIO: no process holds the pty any more
            }
        }
    }

    private func writeAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) {
        var rest = bytes
        while !rest.isEmpty {
            let count = rest.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { return }
            rest = rest.dropFirst(count)
        }
    }
}
