import FoundationEssentials
import Glibc
import LinuxBlock
import Sandbox

/// /run/imgsandbox: one folder per serve instance (named by its pid, see InstanceNames) holding the hidden
/// mounts, the control socket and instance.json, which `status` uses to find the daemon behind a mountpoint.
enum RunDirectory {
    static func createRoot() throws {
        let root = InstanceNames.defaultRunRoot
        if mkdir(root, 0o700) != 0, errno != EEXIST {
            throw ValidationFailure("cannot create \(root): \(SystemError.describe(errno))")
        }
        chmod(root, 0o700)
    }
}

struct InstanceRecord: Codable {
    var pid: Int32
    var mountpoint: String

    /// Written 0600 (the daemon's umask is 0: Foundation's atomic write made it 0666) and renamed into place.
    func write(_ names: InstanceNames) throws {
        let data = Array(try JSONEncoder().encode(self))
        let path = names.instanceRecord, partial = path + ".partial"
        unlink(partial)
        let fd = open(partial, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw ValidationFailure("create \(partial): \(SystemError.describe(errno))") }
        let written = Glibc.write(fd, data, data.count)
        let error = errno
        close(fd)
        guard written == data.count, rename(partial, path) == 0 else {
            let code = written == data.count ? errno : (written < 0 ? error : EIO)
            unlink(partial)
            throw ValidationFailure("write \(path): \(SystemError.describe(code))")
        }
    }

    /// Records of the instances whose process is still alive.
    static func live() -> [(names: InstanceNames, record: InstanceRecord)] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: InstanceNames.defaultRunRoot)) ?? []
        return entries.compactMap(InstanceNames.owner(runEntry:)).sorted().compactMap { pid in
            let names = InstanceNames(pid: pid)
            guard let data = FileManager.default.contents(atPath: names.instanceRecord),
                  let record = try? JSONDecoder().decode(InstanceRecord.self, from: data),
                  kill(record.pid, 0) == 0 || errno == EPERM
            else { return nil }
            return (names, record)
        }
    }
}

/// An error for the user's terminal. Names in it are PathText-escaped where they are interpolated; control
/// bytes that still reach it (from text the daemon sent) are escaped here, so nothing can drive the terminal.
struct ValidationFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = EscapingLogHandler.escape(description) }
}
