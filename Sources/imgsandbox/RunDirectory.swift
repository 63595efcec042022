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

    func write(_ names: InstanceNames) throws {
        let data = try JSONEncoder().encode(self)
        try data.write(to: URL(fileURLWithPath: names.instanceRecord), options: .atomic)
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

struct ValidationFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
