import CLinux
import Glibc

/// ext4-specific ioctls.
public enum Ext4 {
    /// EXT4_IOC_RESIZE_FS on the mounted filesystem's root: grows it online to `toBlocks` filesystem blocks
    /// (the device underneath must already be that large). Needs CAP_SYS_RESOURCE, else EPERM.
    public static func growOnline(mountPath: String, toBlocks: UInt64) throws(SystemError) {
        let fd = try systemCall("open", mountPath) {
            open(mountPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        }
        defer { close(fd) }
        var blocks = toBlocks
        try systemCall("EXT4_IOC_RESIZE_FS", mountPath) { clinux_ioctl_ptr(fd, clinux_EXT4_IOC_RESIZE_FS, &blocks) }
    }

    /// Whether this process holds CAP_SYS_RESOURCE, which the kernel requires for growOnline (root in a
    /// container often lacks it; check before promising a grow).
    public static var canGrowOnline: Bool {
        guard let status = try? FileIO.readText("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let mask = UInt64(FileIO.trimmed(line.dropFirst("CapEff:".count)), radix: 16) else { return false }
        return mask & (1 << UInt64(clinux_CAP_SYS_RESOURCE)) != 0
    }
}
