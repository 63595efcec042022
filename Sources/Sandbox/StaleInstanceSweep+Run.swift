import Glibc
import LinuxBlock
import Logging

extension StaleInstanceSweep {
    public struct Outcome: Sendable {
        public var dead: [Int32] = []
        public var done: [Action] = []
        /// One line per action that failed: the action and the kernel's error.
        public var failures: [String] = []
    }

    /// Reads the run root, the mount table, the dm device list (when device-mapper is there) and the loop labels.
    public static func survey(runRoot: String, deviceMapper: DeviceMapper?) -> Survey {
        let instances = FileIO.list(runRoot).compactMap { name -> Survey.Instance? in
            guard let pid = InstanceNames.owner(runEntry: name) else { return nil }
            let names = InstanceNames(pid: pid, runRoot: runRoot)
            let record = (try? readSmallFile(names.processRecord)).flatMap(InstanceProcess.init(recordText:))
            let zramIDs = ZramAllocator.recorded(in: names.zramLedger)
            return Survey.Instance(pid: pid, record: record, zramIDs: zramIDs)
        }
        let dmNames = ((try? deviceMapper?.list()) ?? []).map(\.name)
        let loops = LoopDevice.attached().map { (index: $0.index, label: $0.label) }
        return Survey(runRoot: runRoot, instances: instances.sorted { $0.pid < $1.pid }, mounts: Mount.mountPoints(),
                      dmNames: dmNames, loops: loops)
    }

    /// Surveys, plans and releases what dead instances left. Failures are logged and returned; the run
    /// directory of an instance whose objects could not all be released stays for the next sweep.
    @discardableResult
    public static func run(runRoot: String, deviceMapper: DeviceMapper?, zram: Zram = Zram(), logger: Logger) -> Outcome {
        // One sweep at a time: two serves starting together would release the same objects at once (one
        // unmounting what the other is about to reset: EBUSY). No run root yet: nothing to sweep, no lock.
        let lock = open(InstanceNames.sweepLock(runRoot: runRoot), O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0o600)
        defer { if lock >= 0 { close(lock) } }
        if lock >= 0 { while flock(lock, LOCK_EX) != 0 && errno == EINTR {} }
        let survey = survey(runRoot: runRoot, deviceMapper: deviceMapper)
        var outcome = Outcome()
        outcome.dead = deadInstances(survey, ownPID: getpid(), isAlive: InstanceProcess.isAlive)
        guard !outcome.dead.isEmpty else { return outcome }
        logger.notice("sweeping what dead serve instances left: pids \(outcome.dead.map(String.init).joined(separator: ", "))")
        for action in plan(survey, dead: outcome.dead) {
            // The records (zram ledger) are the only way back to what failed: keep them for the next sweep.
            if case .removeRunDirectory(let path) = action, !outcome.failures.isEmpty {
                logger.warning("sweep keeps \(path) for the next start: \(outcome.failures.count) objects could not be released")
                continue
            }
            do {
                try perform(action, deviceMapper: deviceMapper, zram: zram)
                outcome.done.append(action)
                logger.info("swept: \(action)")
            } catch {
                outcome.failures.append("\(action): \(error)")
                logger.error("sweep could not \(action): \(error)")
            }
        }
        return outcome
    }

    static func perform(_ action: Action, deviceMapper: DeviceMapper?, zram: Zram) throws {
        switch action {
        case .detachFuse(let path):
            try ignoringGone { try Mount.unmount(path, detach: true) }
        case .unmount(let path):
            do {
                try ignoringGone { try Mount.unmount(path) }
            } catch let error as SystemError where error.errno == EBUSY {
                // Something still has a file open in it: detach now, the kernel frees it when that closes.
                try Mount.unmount(path, detach: true)
            }
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
