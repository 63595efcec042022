import Dispatch
import Glibc
import Logging
import Synchronization

/// State of the COW watcher: whether it runs, and each live sandbox's alarm (by serial).
final class CowWatch: Sendable {
    struct State {
        var running = false
        var stopped = false
        var alarms: [UInt64: CowAlarm] = [:]
    }
    let state = Mutex(State())
}

extension SandboxManager {
    /// Starts a thread that checks every sandbox's COW store each `interval`, five times a second by
    /// default (short: a store that may grow must be grown before a fast writer fills the last step; one
    /// check reads only the store: a dm status ioctl, or the statvfs of an overlay upper): grows stores that
    /// may grow (dm with --cow-max), logs a warning when use reaches 80 % and 95 % of the budget, and an
    /// error when a store overflows. Runs until shutdown.
    public func startCowWatcher(interval: Duration = .milliseconds(200)) {
        let start = cowWatch.state.withLock { state -> Bool in
            defer { state.running = true }
            return !state.running && !state.stopped
        }
        guard start else { return }
        let pause = timespec(tv_sec: Int(interval.components.seconds),
                             tv_nsec: Int(interval.components.attoseconds / 1_000_000_000))
        DispatchQueue(label: "imgsandbox-cow-watch").async { [self] in
            var pause = pause
            while !cowWatch.state.withLock({ $0.stopped }) {
                checkCowStores()
                nanosleep(&pause, nil)
            }
        }
    }

    func stopCowWatcher() {
        cowWatch.state.withLock { $0.stopped = true }
    }

    /// One pass of the watcher (also called directly by tests).
    public func checkCowStores() {
        let live = liveSandboxes()
        var seen = Set<UInt64>()
        for (ref, attachment, access) in live {
            seen.insert(ref.serial)
            let checked: SandboxUsage? = access.ifAlive {
                var usage = engine.cowUsage(of: attachment)
                do {
                    if let grown = try engine.growCowStore(of: attachment, usage: usage) {
                        logger.info("grew the COW store of \(ref.image)/\(ref.name) to \(ByteSize.format(grown)) (max \(ByteSize.format(usage.cowMaxBytes)))")
                        usage = engine.cowUsage(of: attachment)
                    }
                } catch {
                    logger.error("growing the COW store of \(ref.image)/\(ref.name) failed: \(error)")
                }
                return usage
            }
            guard let usage = checked else { continue }
            let risen = cowWatch.state.withLock { state in state.alarms[ref.serial, default: CowAlarm()].update(usage) }
            guard let risen else { continue }
            let used = "\(ByteSize.format(usage.cowUsedBytes)) of \(ByteSize.format(max(usage.cowMaxBytes, usage.cowTotalBytes)))"
            switch risen {
            case .overflowed:
                logger.error("sandbox \(ref.image)/\(ref.name) overflowed its COW store (\(used)): its writes fail; rmdir frees it")
            case .high, .critical:
                logger.warning("sandbox \(ref.image)/\(ref.name) uses \(risen) of its COW budget (\(used))")
            case .normal:
                break
            }
        }
        cowWatch.state.withLock { state in state.alarms = state.alarms.filter { seen.contains($0.key) } }
    }
}
