import FoundationEssentials
import Glibc

/// /run/imgsandbox: one folder per serve instance (named by its pid) holding the hidden mounts, the
/// control socket and instance.json, which `status` uses to find the daemon behind a mountpoint.
enum RunDirectory {
    static let root = "/run/imgsandbox"

    static func instanceDirectory(_ instance: String) -> String { "\(root)/\(instance)" }
    static func socketPath(_ instance: String) -> String { "\(instanceDirectory(instance))/control.sock" }
    static func recordPath(_ instance: String) -> String { "\(instanceDirectory(instance))/instance.json" }

    static func createRoot() throws {
        if mkdir(root, 0o700) != 0, errno != EEXIST {
            throw ValidationFailure("cannot create \(root): \(String(cString: strerror(errno)))")
        }
        chmod(root, 0o700)
    }
}

struct InstanceRecord: Codable {
    var pid: Int32
    var mountpoint: String
    var imagesDirectory: String
    var engine: String

    func write(instance: String) throws {
        let data = try JSONEncoder().encode(self)
        try data.write(to: URL(fileURLWithPath: RunDirectory.recordPath(instance)), options: .atomic)
    }

    /// Records of the instances whose process is still alive.
    static func live() -> [(instance: String, record: InstanceRecord)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: RunDirectory.root)) ?? []
        return names.sorted().compactMap { name in
            guard let data = FileManager.default.contents(atPath: RunDirectory.recordPath(name)),
                  let record = try? JSONDecoder().decode(InstanceRecord.self, from: data),
                  kill(record.pid, 0) == 0 || errno == EPERM
            else { return nil }
            return (name, record)
        }
    }
}

struct ValidationFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
