import Glibc
import LinuxBlock
import Logging
import Sandbox

/// The crash-safety records of a serve instance in its run directory (/run/imgsandbox/PID): `process`
/// (pid and start time) and the zram ledger; and the sweep of dead instances at start.
enum InstanceRun {
    static func recordProcess(_ names: InstanceNames) throws {
        let runDirectory = names.runDirectory
        guard let process = InstanceProcess.current() else {
            throw ValidationFailure("cannot read /proc/self/stat: \(SystemError.describe(errno))")
        }
        if mkdir(runDirectory, 0o700) != 0 {
            guard errno == EEXIST else { throw ValidationFailure("mkdir \(runDirectory): \(SystemError.describe(errno))") }
            // Left by a dead instance with this pid that the sweep could not release, or made by an instance
            // in another PID namespace: sharing it would mix their records and names.
            throw ValidationFailure("""
                \(runDirectory) belongs to another instance with pid \(names.pid) (dead but not swept, or in another \
                PID namespace): see `imgsandbox doctor`; start serve again (it gets another pid)
                """)
        }
        let path = names.processRecord
        let fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw ValidationFailure("create \(path): \(SystemError.describe(errno))") }
        defer { close(fd) }
        let text = Array(process.recordText.utf8)
        guard write(fd, text, text.count) == text.count else {
            throw ValidationFailure("write \(path): \(SystemError.describe(errno))")
        }
    }

    /// After a clean teardown: nothing is left for a sweep to find.
    static func removeRecords(_ names: InstanceNames) {
        rmdir(names.zramLedger)
        unlink(names.processRecord)
        rmdir(names.runDirectory)
    }

    /// Releases what serve instances whose process is gone left behind (never a live instance's objects).
    static func sweepStale(logger: Logger) {
        let outcome = StaleInstanceSweep.run(runRoot: InstanceNames.defaultRunRoot, deviceMapper: try? DeviceMapper(), logger: logger)
        if !outcome.dead.isEmpty {
            let failed = outcome.failures.values.map(\.count).reduce(0, +)
            logger.notice("swept \(outcome.done.count) objects of dead instances \(outcome.dead); \(failed) could not be released")
        }
    }
}
