import Glibc
import LinuxBlock

/// The process a serve instance runs as: its pid and its start time (field 22 of /proc/PID/stat, in clock
/// ticks since boot), so a pid reused by another process after a crash is not taken for the instance.
public struct InstanceProcess: Sendable, Equatable {
    public let pid: Int32
    public let startTime: UInt64

    public init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    /// This process; nil only if /proc is missing.
    public static func current() -> InstanceProcess? {
        let pid = getpid()
        return startTime(of: pid).map { InstanceProcess(pid: pid, startTime: $0) }
    }

    /// The start time of a running process, nil if there is none with that pid or it is dead: a zombie (Z)
    /// or dying (X) process is dead even while its parent has not reaped it (init reaps late).
    public static func startTime(of pid: Int32) -> UInt64? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        guard let stat = parseStat(String(decoding: buffer[0..<count], as: UTF8.self)), !"ZX".contains(stat.state) else {
            return nil
        }
        return stat.startTime
    }

    /// "PID (comm) S ppid ... starttime ...": comm may hold spaces and parentheses, so fields are counted
    /// after the last ')'; the state is field 3 and starttime field 22.
    static func parseStat(_ stat: String) -> (state: Character, startTime: UInt64)? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, fields[0].count == 1, let state = fields[0].first, let start = UInt64(fields[19]) else {
            return nil
        }
        return (state, start)
    }

    /// The record file's text: "PID STARTTIME\n".
    public var recordText: String { "\(pid) \(startTime)\n" }

    public init?(recordText: String) {
        let fields = recordText.split(whereSeparator: \.isWhitespace)
        guard fields.count == 2, let pid = Int32(fields[0]), let start = UInt64(fields[1]) else { return nil }
        self.init(pid: pid, startTime: start)
    }

    /// The recorded process still runs (same pid, same start time).
    public var isRunning: Bool { Self.startTime(of: pid) == startTime }

    /// Whether the instance with this pid is alive: by its record when there is one, else by the pid alone
    /// (a reused pid then keeps its objects, which errs on the side of not touching them).
    public static func isAlive(pid: Int32, record: InstanceProcess?) -> Bool {
        if let record { return record.isRunning }
        return startTime(of: pid) != nil
    }
}
