import Glibc
import LinuxBlock
import Logging

/// Finds what serve instances whose process is gone left in the kernel, and releases it. Only objects that
/// carry an imgsandbox instance in their name (InstanceNames), or that a dead instance recorded, are
/// touched: its FUSE mount, hidden mounts under its run directory, dm devices, the zram devices in its
/// ledger and its loop devices.
public struct StaleInstanceSweep {
    /// What the kernel and the run root show, read once before planning.
    public struct Survey: Sendable, Equatable {
        public struct Instance: Sendable, Equatable {
            public var pid: Int32
            public var record: InstanceProcess?
            public var zramIDs: [Int]
            public init(pid: Int32, record: InstanceProcess?, zramIDs: [Int]) {
                self.pid = pid
                self.record = record
                self.zramIDs = zramIDs
            }
        }
        public var runRoot: String
        /// Instances with a run directory.
        public var instances: [Instance]
        /// In /proc/self/mountinfo order (parents before children).
        public var mounts: [MountEntry]
        public var dmNames: [String]
        public var loops: [(index: Int, label: String?)]

        public init(runRoot: String, instances: [Instance], mounts: [MountEntry], dmNames: [String],
                    loops: [(index: Int, label: String?)]) {
            self.runRoot = runRoot
            self.instances = instances
            self.mounts = mounts
            self.dmNames = dmNames
            self.loops = loops
        }

        public static func == (a: Survey, b: Survey) -> Bool {
            a.runRoot == b.runRoot && a.instances == b.instances && a.mounts == b.mounts && a.dmNames == b.dmNames
                && a.loops.map(\.index) == b.loops.map(\.index) && a.loops.map(\.label) == b.loops.map(\.label)
        }
    }

    public enum Action: Sendable, Equatable, CustomStringConvertible {
        case detachFuse(String)
        case unmount(String)
        case removeDM(String)
        case freeZram(Int, ledger: String)
        case detachLoop(Int, label: String)
        case removeRunDirectory(String)

        public var description: String {
            switch self {
            case .detachFuse(let path): "detach dead FUSE mount \(path)"
            case .unmount(let path): "unmount \(path)"
            case .removeDM(let name): "remove dm \(name)"
            case .freeZram(let id, _): "reset and remove zram\(id)"
            case .detachLoop(let index, let label): "detach loop\(index) (\(label))"
            case .removeRunDirectory(let path): "remove \(path)"
            }
        }
    }

    /// Pids of dead instances, from every place an instance leaves its pid. `isAlive` decides; our own pid
    /// is never dead.
    public static func deadInstances(_ survey: Survey, ownPID: Int32,
                                     isAlive: (Int32, InstanceProcess?) -> Bool) -> [Int32] {
        var pids = Set(survey.instances.map(\.pid))
        for mount in survey.mounts where mount.type.hasPrefix("fuse") {
            if let pid = InstanceNames.owner(fsName: mount.source) { pids.insert(pid) }
        }
        for name in survey.dmNames {
            if let pid = InstanceNames.owner(dmName: name) { pids.insert(pid) }
        }
        for loop in survey.loops {
            if let label = loop.label, let pid = InstanceNames.owner(loopLabel: label) { pids.insert(pid) }
        }
        let records = Dictionary(survey.instances.map { ($0.pid, $0.record) }, uniquingKeysWith: { a, _ in a })
        return pids.filter { $0 != ownPID && !isAlive($0, records[$0] ?? nil) }.sorted()
    }

    /// The release order for `dead`: FUSE mounts, hidden mounts (children first), dm devices (snapshots, COW
    /// stores, bases), zram, loops, then the run directory.
    public static func plan(_ survey: Survey, dead: [Int32]) -> [Action] {
        var actions: [Action] = []
        let deadSet = Set(dead)
        for mount in survey.mounts.reversed() where mount.type.hasPrefix("fuse") {
            if let pid = InstanceNames.owner(fsName: mount.source), deadSet.contains(pid) {
                actions.append(.detachFuse(mount.mountPoint))
            }
        }
        for pid in dead {
            let names = InstanceNames(pid: pid, runRoot: survey.runRoot)
            for mount in survey.mounts.reversed() where names.holds(path: mount.mountPoint) {
                actions.append(.unmount(mount.mountPoint))
            }
        }
        let names = survey.dmNames.filter { name in
            InstanceNames.owner(dmName: name).map(deadSet.contains) ?? false
        }
        actions += names.map { (role: InstanceNames.DeviceRole(dmName: $0), name: $0) }.sorted { ($0.role, $0.name) < ($1.role, $1.name) }
            .map { .removeDM($0.name) }
        for instance in survey.instances where deadSet.contains(instance.pid) {
            let ledger = InstanceNames(pid: instance.pid, runRoot: survey.runRoot).zramLedger
            actions += instance.zramIDs.map { .freeZram($0, ledger: ledger) }
        }
        for loop in survey.loops {
            if let label = loop.label, let pid = InstanceNames.owner(loopLabel: label), deadSet.contains(pid) {
                actions.append(.detachLoop(loop.index, label: label))
            }
        }
        for instance in survey.instances where deadSet.contains(instance.pid) {
            actions.append(.removeRunDirectory(InstanceNames(pid: instance.pid, runRoot: survey.runRoot).runDirectory))
        }
        return actions
    }
}
