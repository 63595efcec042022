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
        let flags = clinux_UMOUNT_NOFOLLOW | (detach ? clinux_MNT_DETACH : 0)
        var attempt = 1
        while true {
            do {
                // Alone: a spawned child between clone and exec would still hold fds this process closed there.
                _ = try SpawnGate.alone { () throws(SystemError) in try systemCall("umount2", target) { umount2(target, flags) } }
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
