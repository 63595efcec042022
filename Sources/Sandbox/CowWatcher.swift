import Dispatch
import Glibc
import Logging
import Synchronization

/// Checks every sandbox's COW stores: grows stores that may grow (dm with --cow-max, FAT block COWs), logs
/// a warning when use reaches 80 % and 95 % of the budget, and an error when a store overflows. Each store
/// has its own budget and alarm: the root's, and each other partition's (a Linux partition's engine store,
/// a FAT partition's block COW).
///
/// Locking: `state` is a leaf (short sections); a pass reads a sandbox's stores inside its SandboxAccess.
final class CowWatcher: Sendable {
    private struct State {
        var running = false
        var stopped = false
        /// Each live store's alarm, by serial.
        var alarms: [UInt64: CowAlarm] = [:]
    }
    private let state = Mutex(State())
    private let engine: any SandboxEngine
    private let partitions: SandboxPartitions
    private let logger: Logger

    init(engine: any SandboxEngine, partitions: SandboxPartitions, logger: Logger) {
        self.engine = engine
        self.partitions = partitions
        self.logger = logger
    }

    /// Starts a thread that runs a pass over `sandboxes()` each `interval` until `stop()`. Short intervals:
    /// a store that may grow must be grown before a fast writer fills the last step; one check reads only the
    /// store (a dm status ioctl, or the statvfs of an overlay upper).
    func start(interval: Duration, sandboxes: @escaping @Sendable () -> [LiveSandbox]) {
        let start = state.withLock { state -> Bool in
            defer { state.running = true }
            return !state.running && !state.stopped
        }
        guard start else { return }
        let pause = timespec(tv_sec: Int(interval.components.seconds),
                             tv_nsec: Int(interval.components.attoseconds / 1_000_000_000))
        DispatchQueue(label: "imgsandbox-cow-watch").async { [self] in
            var pause = pause
            while !state.withLock({ $0.stopped }) {
                check(sandboxes())
                nanosleep(&pause, nil)
            }
        }
    }

    func stop() {
        state.withLock { $0.stopped = true }
    }

    /// One pass over `sandboxes`; alarms of stores no longer among them are forgotten.
    func check(_ sandboxes: [LiveSandbox]) {
        var seen = Set<UInt64>()
        for sandbox in sandboxes where !sandbox.ref.broken {
            let ref = sandbox.ref
            seen.insert(ref.serial)
            for part in sandbox.parts { seen.insert(part.ref.serial) }
            let readings: [(serial: UInt64, what: String, usage: SandboxUsage)]? = sandbox.access.ifAlive {
                var readings = [(ref.serial, "", watchEngineStore(sandbox.attachment, "\(ref.image)/\(ref.name)"))]
                for part in sandbox.parts {
                    let what = " partition \(part.ref.mount.partition.number) (\(part.ref.mount.mountPoint))"
                    switch part.ref.content {
                    case .fat(_, let cow?):
                        if let grown = partitions.growFAT(part, cow) {
                            logger.info("grew the COW store of \(ref.image)/\(ref.name)\(what) to \(ByteSize.format(grown)) (max \(ByteSize.format(partitions.fatCowMax(part.ref.mount))))")
                        }
                        readings.append((part.ref.serial, what, partitions.fatUsage(part, cow)))
                    case .fat(_, nil):
                        break
                    case .mounted:
                        if let attachment = part.attachment {
                            readings.append((part.ref.serial, what, watchEngineStore(attachment, "\(ref.image)/\(ref.name)\(what)")))
                        }
                    }
                }
                return readings
            }
            for (serial, what, usage) in readings ?? [] {
                let risen = state.withLock { state in state.alarms[serial, default: CowAlarm()].update(usage) }
                guard let risen else { continue }
                let used = "\(ByteSize.format(usage.cowUsedBytes)) of \(ByteSize.format(max(usage.cowMaxBytes, usage.cowTotalBytes)))"
                switch risen {
                case .overflowed:
                    logger.error("sandbox \(ref.image)/\(ref.name)\(what) overflowed its COW store (\(used)): its writes fail; rmdir frees it")
                case .high, .critical:
                    logger.warning("sandbox \(ref.image)/\(ref.name)\(what) uses \(risen) of its COW budget (\(used))")
                case .normal:
                    break
                }
            }
        }
        state.withLock { state in state.alarms = state.alarms.filter { seen.contains($0.key) } }
    }

    /// Reads an engine's store (the root's or a Linux partition's), growing it first when it may and should.
    private func watchEngineStore(_ attachment: any EngineAttachment, _ name: String) -> SandboxUsage {
        var usage = engine.cowUsage(of: attachment)
        do {
            if let grown = try engine.growCowStore(of: attachment, usage: usage) {
                logger.info("grew the COW store of \(name) to \(ByteSize.format(grown)) (max \(ByteSize.format(usage.cowMaxBytes)))")
                usage = engine.cowUsage(of: attachment)
            }
        } catch {
            logger.error("growing the COW store of \(name) failed: \(error)")
        }
        return usage
    }
}
