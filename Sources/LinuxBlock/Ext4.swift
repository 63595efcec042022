import CLinux
import Glibc

/// ext4-specific ioctls.
public enum Ext4 {
    /// EXT4_IOC_RESIZE_FS on the mounted filesystem's root: grows it online to `toBlocks` filesystem blocks
    /// (the device underneath must already be that large).
    public static func growOnline(mountPath: String, toBlocks: UInt64) throws(SystemError) {
        let fd = try systemCall("open", mountPath) {
            open(mountPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        }
        defer { close(fd) }
        var blocks = toBlocks
        try systemCall("EXT4_IOC_RESIZE_FS", mountPath) { clinux_ioctl_ptr(fd, clinux_EXT4_IOC_RESIZE_FS, &blocks) }
    }
}
