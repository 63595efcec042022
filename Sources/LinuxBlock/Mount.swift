import CLinux
import Glibc

/// mount(2), umount2(2) and the mount table.
public enum Mount {
    public static func mount(source: String, target: String, type: String, flags: MountFlags = [],
                             options: String = "") throws(SystemError) {
        try systemCall("mount", target) {
            Glibc.mount(source, target, type, flags.rawValue, options.isEmpty ? nil : options)
        }
    }

    /// umount2 with UMOUNT_NOFOLLOW (a symlink planted at the target is not followed), MNT_DETACH when `detach`.
    public static func unmount(_ target: String, detach: Bool = false) throws(SystemError) {
        try unmountRetryingBusy(target, flags: clinux_UMOUNT_NOFOLLOW | (detach ? clinux_MNT_DETACH : 0), name: target)
    }

    /// Unmounts the mount mountinfo lists with id `mountID` at `path`, where users may own a directory on
    /// the way (a stale FUSE mountpoint): the path is resolved from "/" without following any symlink
    /// (openat2 RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), the fd's mount id must be `mountID`, and the
    /// unmount goes through that fd (/proc/self/fd/N), so swapping a parent for a symlink cannot redirect it.
    /// ELOOP when a symlink lies on the way, ESTALE when the path leads to another mount now.
    public static func unmount(mountID: UInt64, at path: String, detach: Bool = false) throws(SystemError) {
        guard path.hasPrefix("/"), path != "/" else { throw SystemError("unmount (not an absolute mount point)", path, errno: EINVAL) }
        let root = try FileDescriptor.open("/", O_PATH_DIRECTORY)
        let fd = FileDescriptor(adopting: try systemCall("openat2 (no symlinks)", path) {
            clinux_openat2(root.raw, String(path.dropFirst()), UInt64(clinux_O_PATH | O_CLOEXEC), 0,
                           clinux_RESOLVE_NO_SYMLINKS | clinux_RESOLVE_NO_MAGICLINKS)
        })
        var found: UInt64 = 0
        try systemCall("statx (mount id)", path) { clinux_mount_id_of_fd(fd.raw, &found) }
        guard found == mountID else {
            throw SystemError("unmount (the path leads to mount \(found), not \(mountID))", path, errno: ESTALE)
        }
        try unmountRetryingBusy("/proc/self/fd/\(fd.raw)", flags: detach ? clinux_MNT_DETACH : 0, name: path)
    }

    private static let O_PATH_DIRECTORY = clinux_O_PATH | O_DIRECTORY | O_CLOEXEC

    private static func unmountRetryingBusy(_ target: String, flags: Int32, name: String) throws(SystemError) {
        var attempt = 1
        while true {
            do {
                // Alone: a spawned child between clone and exec would still hold fds this process closed there.
                _ = try SpawnGate.alone { () throws(SystemError) in try systemCall("umount2", name) { umount2(target, flags) } }
                return
            } catch where error.errno == EBUSY && attempt < busyAttempts {
                // A path walk in flight (a concurrent stat or lookup reaching the mount) holds a reference
                // for the length of one syscall; the kernel offers nothing to wait on, so try again shortly.
                // Open files keep it busy through every attempt: 20 x 10 ms bounds what that costs.
                attempt += 1
                usleep(10_000)
            }
        }
    }

    static let busyAttempts = 20

    /// The parsed /proc/self/mountinfo; empty if it cannot be read.
    public static func mountPoints() -> [MountEntry] {
        guard let text = try? FileIO.readText("/proc/self/mountinfo") else { return [] }
        return text.split(separator: "\n").compactMap { MountEntry(mountInfoLine: $0) }
    }
}
