import Glibc

/// What /proc/PID/status says about a process's groups and effective capabilities: the one parser of it.
public struct ProcessStatus: Sendable, Equatable {
    public let groups: [gid_t]
    /// CapEff: bit n is capability n.
    public let effectiveCapabilities: UInt64

    public init(groups: [gid_t], effectiveCapabilities: UInt64) {
        self.groups = groups
        self.effectiveCapabilities = effectiveCapabilities
    }

    /// nil without a CapEff line.
    public init?(statusText text: String) {
        var groups: [gid_t] = []
        var effective: UInt64?
        for line in text.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.first == "Groups:" {
                groups = fields.dropFirst().compactMap { gid_t($0) }
            } else if fields.first == "CapEff:", fields.count > 1 {
                effective = UInt64(fields[1], radix: 16)
            }
        }
        guard let effective else { return nil }
        self.init(groups: groups, effectiveCapabilities: effective)
    }

    /// `pid` nil: this process. nil when it cannot be read (gone, or in another pid namespace).
    public static func of(pid: pid_t? = nil) -> ProcessStatus? {
        let path = pid.map { "/proc/\($0)/status" } ?? "/proc/self/status"
        return (try? FileIO.readText(path)).flatMap(ProcessStatus.init(statusText:))
    }

    public func has(capability: Int32) -> Bool {
        capability >= 0 && capability < 64 && effectiveCapabilities & (UInt64(1) << UInt64(capability)) != 0
    }
}
