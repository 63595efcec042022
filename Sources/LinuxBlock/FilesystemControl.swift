import CLinux
import Glibc

/// Whole-filesystem calls on a mounted filesystem of ours, named by its mount point: freeze and thaw
/// (FIFREEZE/FITHAW), discard of its free blocks (FITRIM), and syncfs(2), which reports the write errors
/// of the filesystem (a full destination under a loop device shows up only there). Ioctls, not the
/// fsfreeze/fstrim/sync programs: an errno names what failed.
public enum FilesystemControl {
    /// Blocks writes until `thaw`; EOPNOTSUPP where the filesystem cannot freeze (overlayfs, tmpfs).
    public static func freeze(_ mountPoint: String) throws(SystemError) {
        try onRoot(of: mountPoint, "FIFREEZE") { clinux_fifreeze($0) }
    }

    public static func thaw(_ mountPoint: String) throws(SystemError) {
        try onRoot(of: mountPoint, "FITHAW") { clinux_fithaw($0) }
    }

    /// Returns the bytes the filesystem discarded (for a loop-backed one: holes punched in its file).
    @discardableResult
    public static func trim(_ mountPoint: String) throws(SystemError) -> UInt64 {
        var trimmed: UInt64 = 0
        try onRoot(of: mountPoint, "FITRIM") { clinux_fitrim($0, &trimmed) }
        return trimmed
    }

    public static func sync(_ mountPoint: String) throws(SystemError) {
        try onRoot(of: mountPoint, "syncfs") { clinux_syncfs($0) }
    }

    private static func onRoot(of mountPoint: String, _ operation: String, _ call: (Int32) -> Int32) throws(SystemError) {
        let fd = try FileDescriptor.open(mountPoint, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        try systemCall(operation, mountPoint) { call(fd.raw) }
    }
}
