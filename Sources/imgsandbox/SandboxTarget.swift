import FoundationEssentials
import Glibc
import LinuxBlock
import PrintableText
import Sandbox

/// A sandbox named on the command line by its directory, MOUNTPOINT/IMAGE/sandboxes/NAME, and the live
/// daemon serving it.
struct SandboxTarget {
    let names: InstanceNames
    let mountpoint: String
    let image: String
    let sandbox: String

    static func resolve(_ directory: String) throws -> SandboxTarget {
        guard let resolved = realpath(directory, nil) else {
            throw ValidationFailure("\(PathText.escape(directory)): \(SystemError.describe(errno))")
        }
        let path = String(cString: resolved)
        free(resolved)
        for (names, record) in InstanceRecord.live() where path.hasPrefix(record.mountpoint + "/") {
            let parts = path.dropFirst(record.mountpoint.count + 1).split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[1] == "sandboxes" else { break }
            return SandboxTarget(names: names, mountpoint: record.mountpoint, image: String(parts[0]), sandbox: String(parts[2]))
        }
        throw ValidationFailure("\(PathText.escape(directory)) is not a sandbox (MOUNTPOINT/IMAGE/sandboxes/NAME) of a running imgsandbox")
    }

    var socketPath: String { names.controlSocket }
}
