import Glibc
import LinuxBlock

/// The process a serve instance runs as: its pid, its start time (field 22 of /proc/PID/stat, in clock
/// ticks since boot), so a pid reused by another process after a crash is not taken for the instance, and
/// its PID namespace (the inode of /proc/self/ns/pid), without which the pid means nothing to a serve in
/// another namespace (pid 1 of a container is not the host's init).
public struct InstanceProcess: Sendable, Equatable {
    public let pid: Int32
    public let startTime: UInt64
    /// nil in records written before the namespace was recorded.
    public let pidNamespace: UInt64?

    public init(pid: Int32, startTime: UInt64, pidNamespace: UInt64? = nil) {
        self.pid = pid
        self.startTime = startTime
        self.pidNamespace = pidNamespace
    }

    /// This process; nil only if /proc is missing.
    public static func current() -> InstanceProcess? {
        let pid = getpid()
        guard let start = startTime(of: pid), let namespace = PidNamespaceView.namespace(of: nil) else { return nil }
        return InstanceProcess(pid: pid, startTime: start, pidNamespace: namespace)
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

    /// The record file's text: "PID STARTTIME PIDNS\n".
    public var recordText: String { "\(pid) \(startTime)\(pidNamespace.map { " \($0)" } ?? "")\n" }

    /// Also reads the older "PID STARTTIME" records.
    public init?(recordText: String) {
        let fields = recordText.split(whereSeparator: \.isWhitespace)
        guard fields.count == 2 || fields.count == 3, let pid = Int32(fields[0]), pid > 0, let start = UInt64(fields[1]) else {
            return nil
        }
        let namespace = fields.count == 3 ? UInt64(fields[2]) : nil
        if fields.count == 3, namespace == nil { return nil }
        self.init(pid: pid, startTime: start, pidNamespace: namespace)
    }

    /// The recorded process still runs (same pid, same start time), looked up in this process's namespace.
    public var isRunning: Bool { Self.startTime(of: pid) == startTime }

    public enum Liveness: Sendable, Equatable {
        case alive, dead
        /// Recorded in another PID namespace that this process cannot see into: never swept from here.
        case unknown
    }

    /// Whether the instance with this pid runs. In this namespace: by its record (pid and start time) or,
    /// without one, by the pid alone (a reused pid then keeps its objects, erring on the side of not
    /// touching them). In another namespace: alive while a running process of that namespace has the pid;
    /// dead only when none has it and this process sees every process on the machine.
    public static func liveness(pid: Int32, record: InstanceProcess?, view: PidNamespaceView) -> Liveness {
        let namespace = record?.pidNamespace ?? view.own
        guard let namespace, namespace != view.own else {
            // Records without a namespace predate it: they were written in the initial namespace.
            if record?.pidNamespace == nil, !view.seesEveryProcess { return .unknown }
            if let record { return record.isRunning ? .alive : .dead }
            return startTime(of: pid) != nil ? .alive : .dead
        }
        if view.runningProcess(pid: pid, in: namespace) != nil { return .alive }
        return view.seesEveryProcess ? .dead : .unknown
    }
}
