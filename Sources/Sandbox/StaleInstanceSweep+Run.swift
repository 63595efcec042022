import Glibc
import LinuxBlock
import Logging

extension StaleInstanceSweep {
    public struct Outcome: Sendable {
        public var dead: [Int32] = []
        /// Instances recorded in a PID namespace this process cannot see into: left alone.
        public var undecided: [Int32] = []
        public var done: [Step] = []
        /// Per dead instance, one line per action that failed: the action and the kernel's error.
        public var failures: [Int32: [String]] = [:]
        /// The dead instances that keep their run directory, with what still holds them.
        public var unswept: [Leftover] = []
    }

    /// Reads the run root, the mount table, the dm device list (when device-mapper is there) and the loop labels.
    public static func survey(runRoot: String, deviceMapper: DeviceMapper?) -> Survey {
        let instances = FileIO.list(runRoot).compactMap { name -> Survey.Instance? in
            guard let pid = InstanceNames.owner(runEntry: name) else { return nil }
            let names = InstanceNames(pid: pid, runRoot: runRoot)
            let record = (try? readSmallFile(names.processRecord)).flatMap(InstanceProcess.init(recordText:))
            let zramIDs = ZramAllocator.recorded(in: names.zramLedger)
            return Survey.Instance(pid: pid, record: record, zramIDs: zramIDs, ownedByRoot: isPrivateRootDirectory(names.runDirectory))
        }
        let dmNames = ((try? deviceMapper?.list()) ?? []).map(\.name)
        let loops = LoopDevice.attached().map { (index: $0.index, label: $0.label) }
        return Survey(runRoot: runRoot, instances: instances.sorted { $0.pid < $1.pid }, mounts: Mount.mountPoints(),
                      dmNames: dmNames, loops: loops)
    }

    /// A directory (not a symlink) owned by root that only root may enter: what serve makes for its run root
    /// and run directories. A user cannot make one, so nothing a user planted is ever taken for ours.
    static func isPrivateRootDirectory(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR && info.st_uid == 0 && info.st_mode & 0o7777 == 0o700
    }

    /// Surveys, plans and releases what dead instances left. Failures are counted per instance: an
    /// instance whose objects could not all be released keeps its run directory (its zram ledger is the only
    /// way back to them) and is logged once with what holds it; every other dead instance is swept.
    @discardableResult
    public static func run(runRoot: String, deviceMapper: DeviceMapper?, zram: Zram = Zram(),
                           view: PidNamespaceView = .current(), logger: Logger) -> Outcome {
        var outcome = Outcome()
        // No run root yet: nothing to sweep. One not made by root as serve makes it: nothing in it is ours.
        guard isPrivateRootDirectory(runRoot) else {
            if access(runRoot, F_OK) == 0 { logger.warning("no sweep of dead instances: \(runRoot) is not a root-owned directory of mode 0700") }
            return outcome
        }
        // One sweep at a time: two serves starting together would release the same objects at once (one
        // unmounting what the other is about to reset: EBUSY).
        let lock = open(InstanceNames.sweepLock(runRoot: runRoot), O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0o600)
        defer { if lock >= 0 { close(lock) } }
        if lock >= 0 { while flock(lock, LOCK_EX) != 0 && errno == EINTR {} }
        let survey = survey(runRoot: runRoot, deviceMapper: deviceMapper)
        let liveness = { (pid: Int32, record: InstanceProcess?) in InstanceProcess.liveness(pid: pid, record: record, view: view) }
        outcome.dead = deadInstances(survey, liveness: liveness)
        outcome.undecided = survey.instances.filter { $0.ownedByRoot && liveness($0.pid, $0.record) == .unknown }.map(\.pid)
        if !outcome.undecided.isEmpty {
            logger.notice("""
                left alone: instances \(outcome.undecided.map(String.init).joined(separator: ", ")) of another PID \
                namespace, which this serve cannot see into (a serve in the initial PID namespace sweeps them once dead)
                """)
        }
        guard !outcome.dead.isEmpty else { return outcome }
        logger.notice("sweeping what dead serve instances left: pids \(outcome.dead.map(String.init).joined(separator: ", "))")
        for step in plan(survey, dead: outcome.dead) {
            if case .removeRunDirectory = step.action, outcome.failures[step.instance] != nil { continue }
            do {
                try perform(step.action, deviceMapper: deviceMapper, zram: zram)
                outcome.done.append(step)
                logger.info("swept: \(step.action)")
            } catch {
                outcome.failures[step.instance, default: []].append("\(step.action): \(error)")
            }
        }
        for (pid, failures) in outcome.failures.sorted(by: { $0.key < $1.key }) {
            let leftover = leftover(pid: pid, runRoot: runRoot, deviceMapper: deviceMapper, zram: zram)
            outcome.unswept.append(leftover)
            logger.warning("""
                dead instance \(pid) cannot be swept (\(failures.joined(separator: "; "))); \(leftover.holdersDescription); \
                \(leftover.remedy); its run directory \(leftover.runDirectory) stays for the next start
                """)
        }
        return outcome
    }

    static func perform(_ action: Action, deviceMapper: DeviceMapper?, zram: Zram) throws {
        switch action {
        case .detachFuse(let mount):
            try unmountResolved(mount, detach: true)
        case .unmount(let mount):
            // Something still has a file open in it: detach now, the kernel frees it when that closes.
            if (try? unmountResolved(mount, detach: false)) == nil { try unmountResolved(mount, detach: true) }
        case .removeDM(let name):
            guard let deviceMapper else { return }
            try ignoringGone { try deviceMapper.remove(name: name) }
        case .freeZram(let id, let ledger):
            let allocator = ZramAllocator(zram: zram, ledger: ledger)
            if zram.exists(id) {
                let holders = zram.holders(id)
                guard holders.isEmpty else { throw SystemError("reset (held by \(holders.joined(separator: ",")))", zram.devicePath(id), errno: EBUSY) }
                try allocator.free(id)
            } else {
                try allocator.forget(id)
            }
        case .detachLoop(let index, let label):
            // Autoclear may have detached it since the survey (its last user went in an earlier step).
            guard LoopDevice.attached().contains(where: { $0.index == index && $0.label == label }) else { return }
            try ignoringGone { try LoopDevice.detach(index: index) }
        case .removeRunDirectory(let path):
            try removeTree(path)
        }
    }

    /// Unmounts through a symlink-free resolution of the path (a user may own a directory on the way to a
    /// FUSE mountpoint). A mount that is no longer in the table is gone already; one the path no longer
    /// leads to, or only through a symlink, stays and fails this instance's sweep.
    static func unmountResolved(_ mount: MountTarget, detach: Bool) throws(SystemError) {
        do {
            try Mount.unmount(mountID: mount.id, at: mount.path, detach: detach)
        } catch {
            let gone = [ENOENT, ESTALE, EINVAL].contains(error.errno) && !Mount.mountPoints().contains { $0.id == mount.id }
            if !gone { throw error }
        }
    }

    /// ENOENT, ENXIO, EINVAL (not mounted, not bound, no such device): someone else got there first.
    private static func ignoringGone(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as SystemError where [ENOENT, ENXIO, EINVAL, ENODEV].contains(error.errno) {
            return
        }
    }

    /// Removes a run directory bottom-up without following symlinks or entering another filesystem: a
    /// directory on another device is a mount that is still there, and stops the removal with EBUSY.
    static func removeTree(_ path: String, device: UInt64? = nil) throws(SystemError) {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw SystemError("lstat", path, errno: errno)
        }
        let own = UInt64(info.st_dev)
        if let device, device != own { throw SystemError("remove (still mounted)", path, errno: EBUSY) }
        if info.st_mode & S_IFMT == S_IFDIR {
            for name in FileIO.list(path) { try removeTree("\(path)/\(name)", device: own) }
            guard rmdir(path) == 0 || errno == ENOENT else { throw SystemError("rmdir", path, errno: errno) }
        } else {
            guard unlink(path) == 0 || errno == ENOENT else { throw SystemError("unlink", path, errno: errno) }
        }
    }

    static func readSmallFile(_ path: String) throws(SystemError) -> String {
        let fd = try systemCall("open", path) { open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = try systemCall("read", path) { buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }
}
