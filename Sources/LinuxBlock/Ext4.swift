import CLinux
import Glibc

/// ext4-specific ioctls.
public enum Ext4 {
    /// EXT4_IOC_RESIZE_FS on the mounted filesystem's root: grows it online to `toBlocks` filesystem blocks
    /// (the device underneath must already be that large). Needs CAP_SYS_RESOURCE, else EPERM.
    public static func growOnline(mountPath: String, toBlocks: UInt64) throws(SystemError) {
        let fd = try FileDescriptor.open(mountPath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        var blocks = toBlocks
        try systemCall("EXT4_IOC_RESIZE_FS", mountPath) { clinux_ioctl_ptr(fd.raw, clinux_EXT4_IOC_RESIZE_FS, &blocks) }
    }

    /// Whether this process holds CAP_SYS_RESOURCE, which the kernel requires for growOnline (root in a
    /// container often lacks it; check before promising a grow).
    public static var canGrowOnline: Bool {
        ProcessStatus.of()?.has(capability: clinux_CAP_SYS_RESOURCE) ?? false
    }
}
