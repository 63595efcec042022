import Glibc
import LinuxBlock
import Logging
import Sandbox

/// The crash-safety records of a serve instance in its run directory (/run/imgsandbox/PID): `process`
/// (pid and start time) and the zram ledger; and the sweep of dead instances at start.
enum InstanceRun {
    static func zramLedger(_ runDirectory: String) -> String { "\(runDirectory)/\(InstanceFiles.zramLedger)" }

    static func recordProcess(runDirectory: String) throws {
        guard let process = InstanceProcess.current() else {
            throw ValidationFailure("cannot read /proc/self/stat: \(String(cString: strerror(errno)))")
        }
        if mkdir(runDirectory, 0o700) != 0, errno != EEXIST {
            throw ValidationFailure("mkdir \(runDirectory): \(String(cString: strerror(errno)))")
        }
        let path = "\(runDirectory)/\(InstanceFiles.process)"
        let fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw ValidationFailure("create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let text = Array(process.recordText.utf8)
        guard write(fd, text, text.count) == text.count else {
            throw ValidationFailure("write \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// After a clean teardown: nothing is left for a sweep to find.
    static func removeRecords(runDirectory: String) {
        rmdir(zramLedger(runDirectory))
        unlink("\(runDirectory)/\(InstanceFiles.process)")
        rmdir(runDirectory)
    }

    /// Releases what serve instances whose process is gone left behind (never a live instance's objects).
    static func sweepStale(logger: Logger) {
        let outcome = StaleInstanceSweep.run(runRoot: RunDirectory.root, deviceMapper: try? DeviceMapper(), logger: logger)
        if !outcome.dead.isEmpty {
            logger.notice("swept \(outcome.done.count) objects of dead instances \(outcome.dead); \(outcome.failures.count) could not be released")
        }
    }
}
