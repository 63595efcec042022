import Glibc

/// PID namespaces as this process's /proc shows them: which one a process is in (the inode of
/// /proc/PID/ns/pid), whether this process sees every process on the machine, and whether a pid of some
/// namespace belongs to a running process. A pid means nothing without its namespace: pid 1 of a
/// container is not the host's init.
public struct PidNamespaceView: Sendable {
    public let procRoot: String
    /// The namespace this process is in; nil without /proc.
    public let own: UInt64?
    /// True in the initial PID namespace: there, a namespace none of /proc's processes is in has no process
    /// left at all. In a child namespace the parent's processes are invisible, so absence proves nothing.
    public let seesEveryProcess: Bool

    public init(procRoot: String = "/proc", own: UInt64?, seesEveryProcess: Bool) {
        self.procRoot = procRoot
        self.own = own
        self.seesEveryProcess = seesEveryProcess
    }

    /// This process's view.
    public static func current() -> PidNamespaceView {
        PidNamespaceView(own: namespace(of: nil), seesEveryProcess: isInitialNamespace())
    }

    /// The inode of /proc/PID/ns/pid (pid nil: this process); nil when there is no such process.
    public static func namespace(of pid: Int32?, procRoot: String = "/proc") -> UInt64? {
        var info = stat()
        guard stat("\(procRoot)/\(pid.map(String.init) ?? "self")/ns/pid", &info) == 0 else { return nil }
        return UInt64(info.st_ino)
    }

    /// The kernel gives the initial PID namespace a fixed inode, PROC_PID_INIT_INO (include/linux/proc_ns.h,
    /// unchanged since 3.8); NS_GET_PARENT cannot tell, as it refuses every ancestor of the caller's own.
    static let initialNamespaceInode: UInt64 = 0xEFFF_FFFC

    static func isInitialNamespace() -> Bool { namespace(of: nil) == initialNamespaceInode }

    /// The local pid of a running (not zombie, not dying) process whose pid in `namespace` is `pid`, found
    /// through /proc/*/ns/pid and the last NSpid entry of /proc/*/status; nil if this view shows none.
    public func runningProcess(pid: Int32, in namespace: UInt64) -> Int32? {
        for entry in FileIO.list(procRoot) {
            guard let local = Int32(entry), Self.namespace(of: local, procRoot: procRoot) == namespace,
                  let status = try? FileIO.readText("\(procRoot)/\(local)/status"),
                  let parsed = Self.parseStatus(status), parsed.innermostPID == pid, !"ZX".contains(parsed.state)
            else { continue }
            return local
        }
        return nil
    }

    /// "State:\tS (sleeping)" and "NSpid:\t4711\t1" (outermost first): the state letter and the pid in the
    /// process's own namespace.
    static func parseStatus(_ text: String) -> (state: Character, innermostPID: Int32)? {
        var state: Character?
        var innermost: Int32?
        for line in text.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.first == "State:", fields.count > 1 { state = fields[1].first }
            if fields.first == "NSpid:", let last = fields.last { innermost = Int32(last) }
        }
        guard let state, let innermost else { return nil }
        return (state, innermost)
    }
}
