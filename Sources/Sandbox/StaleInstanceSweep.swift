import Glibc
import LinuxBlock
import Logging

/// Finds what serve instances whose process is gone left in the kernel, and releases it. Only what
/// imgsandbox made is touched, and only for an instance whose run directory (RUNROOT/PID) is a real
/// directory owned by root with mode 0700 and whose record says it is dead: its FUSE mount (type
/// `fuse.imgsandbox`, fsname `imgsandbox-PID`, `user_id=0`), mounts under its run directory, its dm
/// devices, the zram devices in its ledger and its loop devices (InstanceNames). Mounts are reached without
/// following symlinks and unmounted by their mount id (Mount.unmount(mountID:at:)). One instance that
/// cannot be released keeps only its own run directory: the others are swept all the same.
public struct StaleInstanceSweep {
    /// What the kernel and the run root show, read once before planning.
    public struct Survey: Sendable, Equatable {
        public struct Instance: Sendable, Equatable {
            public var pid: Int32
            public var record: InstanceProcess?
            public var zramIDs: [Int]
            /// The run directory is a directory (not a symlink) owned by root with mode 0700: one imgsandbox
            /// made. Anything else under the run root is left alone.
            public var ownedByRoot: Bool
            public init(pid: Int32, record: InstanceProcess?, zramIDs: [Int], ownedByRoot: Bool = true) {
                self.pid = pid
                self.record = record
                self.zramIDs = zramIDs
                self.ownedByRoot = ownedByRoot
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

        /// The FUSE mounts instance `pid` made: our type, our fsname, mounted by root.
        func fuseMounts(of pid: Int32) -> [MountEntry] {
            mounts.filter { mount in
                mount.type == InstanceNames.fuseType && InstanceNames.owner(fsName: mount.source) == pid
                    && mount.hasOption("user_id=0")
            }
        }
    }

    /// A mount as mountinfo listed it: unmounted only if its path still leads to this mount id.
    public struct MountTarget: Sendable, Equatable, CustomStringConvertible {
        public let id: UInt64
        public let path: String
        public init(id: UInt64, path: String) {
            self.id = id
            self.path = path
        }
        public var description: String { path }
    }

    public enum Action: Sendable, Equatable, CustomStringConvertible {
        case detachFuse(MountTarget)
        case unmount(MountTarget)
        case removeDM(String)
        case freeZram(Int, ledger: String)
        case detachLoop(Int, label: String)
        case removeRunDirectory(String)

        public var description: String {
            switch self {
            case .detachFuse(let mount): "detach dead FUSE mount \(mount)"
            case .unmount(let mount): "unmount \(mount)"
            case .removeDM(let name): "remove dm \(name)"
            case .freeZram(let id, _): "reset and remove zram\(id)"
            case .detachLoop(let index, let label): "detach loop\(index) (\(label))"
            case .removeRunDirectory(let path): "remove \(path)"
            }
        }
    }

    /// One action for one dead instance: failures are counted per instance.
    public struct Step: Sendable, Equatable {
        public let instance: Int32
        public let action: Action
        public init(_ instance: Int32, _ action: Action) {
            self.instance = instance
            self.action = action
        }
    }

    /// Pids of the dead instances: those with a root-owned run directory whose `liveness` is `.dead`.
    /// Objects named after a pid with no such directory are someone else's (or not provably dead).
    public static func deadInstances(_ survey: Survey,
                                     liveness: (Int32, InstanceProcess?) -> InstanceProcess.Liveness) -> [Int32] {
        survey.instances.filter { $0.ownedByRoot && liveness($0.pid, $0.record) == .dead }.map(\.pid).sorted()
    }

    /// The release order for `dead`: FUSE mounts, hidden mounts (children first), dm devices (snapshots, COW
    /// stores, bases), zram, loops, then each run directory.
    public static func plan(_ survey: Survey, dead: [Int32]) -> [Step] {
        var steps: [Step] = []
        let deadSet = Set(dead)
        for mount in survey.mounts.reversed() {
            guard let pid = InstanceNames.owner(fsName: mount.source), deadSet.contains(pid),
                  survey.fuseMounts(of: pid).contains(mount) else { continue }
            steps.append(Step(pid, .detachFuse(MountTarget(id: mount.id, path: mount.mountPoint))))
        }
        for pid in dead {
            let names = InstanceNames(pid: pid, runRoot: survey.runRoot)
            for mount in survey.mounts.reversed() where names.holds(path: mount.mountPoint) {
                steps.append(Step(pid, .unmount(MountTarget(id: mount.id, path: mount.mountPoint))))
            }
        }
        let dmDevices = survey.dmNames.compactMap { name in
            InstanceNames.owner(dmName: name).flatMap { deadSet.contains($0) ? (pid: $0, name: name) : nil }
        }
        steps += dmDevices.map { (role: InstanceNames.DeviceRole(dmName: $0.name), device: $0) }
            .sorted { ($0.role, $0.device.name) < ($1.role, $1.device.name) }
            .map { Step($0.device.pid, .removeDM($0.device.name)) }
        for instance in survey.instances where deadSet.contains(instance.pid) {
            let ledger = InstanceNames(pid: instance.pid, runRoot: survey.runRoot).zramLedger
            steps += instance.zramIDs.map { Step(instance.pid, .freeZram($0, ledger: ledger)) }
        }
        for loop in survey.loops {
            if let label = loop.label, let pid = InstanceNames.owner(loopLabel: label), deadSet.contains(pid) {
                steps.append(Step(pid, .detachLoop(loop.index, label: label)))
            }
        }
        for instance in survey.instances where deadSet.contains(instance.pid) {
            steps.append(Step(instance.pid, .removeRunDirectory(InstanceNames(pid: instance.pid, runRoot: survey.runRoot).runDirectory)))
        }
        return steps
    }
}
