import FATFS
import Glibc
import LinuxBlock
import Sandbox
import Synchronization

/// The COW store's share for root: a user other than root who fills a sandbox (its /tmp is world-writable)
/// leaves root at least 5 % of the filesystem the write lands on. On the overlay engine's ext4 upper that is
/// ext4's reserved blocks, but ext4 cannot enforce them here: overlayfs writes to its upper with the
/// credentials of whoever mounted it (the daemon, root), for which ext4 always opens the reserve. A tmpfs
/// store (no zram) and a FAT partition (the daemon's own FATFS) reserve nothing. So the daemon refuses, with
/// ENOSPC, what another user's request would need beyond that share.
///
/// Who is asking: a request that names a path (create, mkdir, setxattr, open) comes with its caller's uid.
/// A WRITE does not always: the kernel's flusher threads write a shared mapping's dirty pages back as root,
/// through whichever writable handle of the inode it picks. So every write to a node that a user other than
/// root has open for writing is checked, whoever's handle carries it (`UserWriters`). Such opens are served
/// by the daemon, never by FUSE passthrough (which would write past it); and as the kernel makes every open
/// of an inode share its first open's mode, passthrough is used only for files no user but root may write
/// (owned by root, no group or other write bit; a POSIX ACL granting write shows as the group bit). A user's
/// open for writing that still meets a file passing through (root made it writable while holding it open)
/// is refused with ETXTBSY.
/// On the dm engine the check keeps the image filesystem's share; the snapshot's store below it is shared by
/// every writer (docs/SECURITY.md).
extension SandboxFileSystem {
    /// The percentage of a filesystem kept for root (ext4's default reserve, which the overlay store has).
    static let rootSharePercent: UInt64 = UInt64(OverlayEngine.rootSharePercent)

    /// Bytes users other than root may still take: what the filesystem leaves them (`available` blocks), less
    /// what keeping `rootSharePercent` of its `blocks` for root needs beyond what it reserves itself.
    static func userRoom(blocks: UInt64, free: UInt64, available: UInt64, blockSize: UInt64) -> UInt64 {
        let share = blocks * rootSharePercent / 100
        let reserved = free - min(free, available)
        let extra = share - min(share, reserved)
        return (available - min(available, extra)) * blockSize
    }

    /// ENOSPC when a request of a user other than root (`byUser`; by default the request's caller) would take
    /// `bytes` (at least one block) and users have less than that left; `fd` is any fd on the sandbox's mount.
    func requireUserShare(fd: Int32, bytes: Int = 1, byUser: Bool = !RequestUID.isRoot,
                          _ object: @autoclosure () -> String) throws {
        guard byUser else { return }
        var st = statvfs()
        guard fstatvfs(fd, &st) == 0 else { return }   // nothing to measure: the request itself will tell
        let room = Self.userRoom(blocks: UInt64(st.f_blocks), free: UInt64(st.f_bfree), available: UInt64(st.f_bavail),
                                 blockSize: UInt64(st.f_frsize))
        try refuseBeyondShare(room: room, bytes: bytes, object())
    }

    /// The same for a FAT partition's clusters.
    func requireUserShare(fat volume: FATVolume, bytes: Int = 1, byUser: Bool = !RequestUID.isRoot,
                          _ object: @autoclosure () -> String) throws {
        guard byUser else { return }
        let f = volume.statfs()
        let room = Self.userRoom(blocks: f.blocks, free: f.freeBlocks, available: f.availableBlocks,
                                 blockSize: UInt64(f.blockSize))
        try refuseBeyondShare(room: room, bytes: bytes, object())
    }

    /// Runs a write of `bytes` through handle fds of `node`, checked first when users other than root write
    /// that node. Checked writes run one at a time, each with its check: the flusher sends a mapping's pages
    /// on many threads at once, and checks side by side would all see the same room.
    func withUserShare<R>(node: UInt64, bytes: Int, _ object: @autoclosure () -> String, fd: Int32? = nil,
                          fat volume: FATVolume? = nil, _ write: () throws -> R) throws -> R {
        guard userWriters.contains(node: node) else { return try write() }
        return try userWriters.oneAtATime {
            if let fd { try requireUserShare(fd: fd, bytes: bytes, byUser: true, object()) }
            if let volume { try requireUserShare(fat: volume, bytes: bytes, byUser: true, object()) }
            return try write()
        }
    }

    private func refuseBeyondShare(room: UInt64, bytes: Int, _ object: String) throws {
        guard room > UInt64(max(bytes, 1)) else {
            throw SystemError("allocate", "\(object): only root's share of the COW store is left", errno: ENOSPC)
        }
    }

    /// Whether an open with `flags` opens for writing.
    static func writes(_ flags: Int32) -> Bool { flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0 }

    /// Whether an open of a file with attributes `st` may use passthrough (and make later opens of it use
    /// it): only when no user but root may write the file.
    static func onlyRootWrites(_ st: stat) -> Bool { st.st_uid == 0 && st.st_mode & 0o022 == 0 }
}

/// The nodes that users other than root hold open for writing, counted by node, with the handles that count.
final class UserWriters: Sendable {
    private struct Table {
        var writers: [UInt64: Int] = [:]
        var nodeOfHandle: [UInt64: UInt64] = [:]
    }
    private let table = Mutex(Table())
    private let checkedWrites = Mutex(())

    /// Handle `fh` of `node` was opened for writing by a user other than root.
    func add(fh: UInt64, node: UInt64) {
        table.withLock { t in
            t.nodeOfHandle[fh] = node
            t.writers[node, default: 0] += 1
        }
    }

    /// Handle `fh` is released (nothing happens for a handle that did not count).
    func remove(fh: UInt64) {
        table.withLock { t in
            guard let node = t.nodeOfHandle.removeValue(forKey: fh), let count = t.writers[node] else { return }
            t.writers[node] = count > 1 ? count - 1 : nil
        }
    }

    /// Whether writes to `node` are checked against the share, whichever handle carries them.
    func contains(node: UInt64) -> Bool { table.withLock { $0.writers[node] != nil } }

    func oneAtATime<R>(_ body: () throws -> R) throws -> R { try checkedWrites.withLock { _ in try body() } }
}
