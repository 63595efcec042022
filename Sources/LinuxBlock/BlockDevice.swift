import CLinux
import Glibc

/// Queries and node creation for block devices.
public enum BlockDevice {
    /// The device number of the block device at `path` (stat follows /dev symlinks); ENOTBLK otherwise.
    public static func deviceNumber(of path: String) throws(SystemError) -> DeviceNumber {
        var info = stat()
        try systemCall("stat", path) { stat(path, &info) }
        guard info.st_mode & S_IFMT == S_IFBLK else { throw SystemError("stat", path, errno: ENOTBLK) }
        return DeviceNumber(rawValue: numericCast(info.st_rdev))
    }

    /// Size in bytes (BLKGETSIZE64).
    public static func size(of path: String) throws(SystemError) -> UInt64 {
        var bytes: UInt64 = 0
        try withDevice(path) { fd throws(SystemError) in
            try systemCall("BLKGETSIZE64", path) { clinux_ioctl_ptr(fd, clinux_BLKGETSIZE64, &bytes) }
        }
        return bytes
    }

    /// Logical block size in bytes (BLKSSZGET): 512 for loop by default, 4096 for zram.
    public static func logicalBlockSize(of path: String) throws(SystemError) -> Int {
        var size: Int32 = 0
        try withDevice(path) { fd throws(SystemError) in
            try systemCall("BLKSSZGET", path) { clinux_ioctl_ptr(fd, clinux_BLKSSZGET, &size) }
        }
        return Int(size)
    }

    /// Creates the block node `path` (S_IFBLK, 0600) for `dev` when udev did not. An existing node with the
    /// right number is kept, and so is udev's symlink to it (/dev/mapper/NAME -> ../dm-N, which udev may
    /// make at any moment); a stale block node with another number is replaced; anything else is EEXIST.
    public static func makeNode(_ path: String, _ dev: DeviceNumber) throws(SystemError) {
        for _ in 0..<3 {
            var info = stat()
            if lstat(path, &info) == 0 {
                if info.st_mode & S_IFMT == S_IFLNK {
                    var target = stat()
                    if fstatat(AT_FDCWD, path, &target, 0) == 0, target.st_mode & S_IFMT == S_IFBLK,
                       DeviceNumber(rawValue: numericCast(target.st_rdev)) == dev { return }
                }
                guard info.st_mode & S_IFMT == S_IFBLK else { throw SystemError("mknod", path, errno: EEXIST) }
                if DeviceNumber(rawValue: numericCast(info.st_rdev)) == dev { return }
                try systemCall("unlink", path) { unlink(path) }
            } else if errno != ENOENT {
                throw SystemError("lstat", path, errno: errno)
            }
            let rc = mknod(path, S_IFBLK | 0o600, numericCast(dev.rawValue))
            if rc == 0 { return }
            // Lost a race with udev or another thread: look again.
            if errno != EEXIST { throw SystemError("mknod", path, errno: errno) }
        }
        throw SystemError("mknod", path, errno: EEXIST)
    }

    /// Opens a device read-only for a query ioctl. O_NONBLOCK: never wait on removable media.
    static func withDevice(_ path: String, _ body: (Int32) throws(SystemError) -> Void) throws(SystemError) {
        let fd = try FileDescriptor.open(path, O_RDONLY | O_NONBLOCK)
        try body(fd.raw)
    }
}
