import Glibc
import LinuxBlock

/// The COW store's share for root: the overlay engine's upper ext4 keeps ext4's 5 % of reserved blocks, so a
/// user other than root who fills a sandbox (its /tmp is world-writable) leaves root room to write. ext4 alone
/// cannot tell them apart here: overlayfs writes to its upper with the credentials of whoever mounted it (the
/// daemon, root), for which ext4 always opens the reserve. So the daemon refuses, with ENOSPC, what another
/// user's request would need beyond the space ext4 reports available to users (statvfs f_bavail), and serves
/// such users' writes itself (no passthrough) so that each one is checked. On the dm engine the same check
/// keeps the image filesystem's own reserve for root; the snapshot's store below it is shared by every writer.
extension SandboxFileSystem {
    /// ENOSPC for a request of a user other than root that would take `bytes` (at least one block) of a
    /// sandbox's store when users have less than that left; `fd` is any fd on the sandbox's mount.
    func requireUserShare(fd: Int32, bytes: Int = 1, _ object: @autoclosure () -> String) throws {
        guard !RequestUID.isRoot else { return }
        var st = statvfs()
        guard fstatvfs(fd, &st) == 0 else { return }   // nothing to measure: the request itself will tell
        let available = UInt64(st.f_bavail) * UInt64(st.f_frsize)
        guard available > UInt64(max(bytes, 1)) else {
            throw SystemError("allocate", "\(object()): only root's share of the COW store is left", errno: ENOSPC)
        }
    }

    /// Whether an open with `flags` must have its writes served by the daemon (checked against the user share)
    /// rather than passed through to the kernel.
    static func writesThroughDaemon(flags: Int32) -> Bool {
        !RequestUID.isRoot && flags & O_ACCMODE != O_RDONLY
    }
}
