import CLinux
import Glibc
import LinuxBlock
import Sandbox

/// A live sandbox's directory: MOUNTPOINT/IMAGE/sandboxes/NAME of a mounted fuse.imgsandbox filesystem.
public struct SandboxLocation {
    public let path: String
    public let name: String
    public let mountpoint: String

    /// Resolves `given` (host symlinks in it are the user's and followed) and checks that it names a live
    /// sandbox, with a message saying what it is instead.
    public init(_ given: String, mounts: [MountEntry] = Mount.mountPoints()) throws(RunError) {
        guard let resolved = realpath(given, nil) else {
            throw RunError("\(given): \(String(cString: strerror(errno))): not a sandbox directory (expected MOUNTPOINT/IMAGE/sandboxes/NAME)")
        }
        let path = String(cString: resolved)
        free(resolved)
        let served = mounts.filter { $0.type == InstanceNames.fuseType }
        guard let mount = served.filter({ path.hasPrefix($0.mountPoint + "/") }).max(by: { $0.mountPoint.count < $1.mountPoint.count }) else {
            throw RunError("\(given) is not inside a mounted imgsandbox filesystem (no fuse.imgsandbox mount above \(path); is serve running?)")
        }
        let parts = path.dropFirst(mount.mountPoint.count + 1).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[1] == "sandboxes", !parts[0].isEmpty, !parts[2].isEmpty else {
            throw RunError("\(given) is not a sandbox directory: expected \(mount.mountPoint)/IMAGE/sandboxes/NAME (make one with mkdir)")
        }
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw RunError("\(given) is not a live sandbox: \(String(cString: strerror(errno)))")
        }
        self.path = path
        name = String(parts[2])
        mountpoint = mount.mountPoint
    }

    /// An O_PATH fd of the sandbox's root, for resolving everything else relative to it.
    func open() throws(RunError) -> ImageRoot {
        do {
            return ImageRoot(try FileDescriptor.open(path, clinux_O_PATH | O_DIRECTORY | O_NOFOLLOW))
        } catch { throw RunError(error) }
    }
}
