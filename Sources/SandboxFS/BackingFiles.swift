import CFuse
import Glibc
import LinuxBlock
import Synchronization

/// How file data moves between an application and a sandbox's hidden mount.
public enum DataPath: String, Sendable {
    /// FUSE passthrough (kernel 6.9+, libfuse 3.17+): read, write, splice and mmap of an open regular
    /// file go from the kernel straight to the hidden mount's file; the daemon sees only open/release.
    case passthrough
    /// The daemon moves each read/write with splice(2) through a pipe.
    case splice
    /// The daemon copies each read/write through its own memory.
    case copy
    /// The kernel has not sent INIT yet.
    case unknown

    /// The libfuse this binary is linked with, e.g. "3.17.2".
    public static var libfuseVersion: String { String(cString: fuse_pkgversion()) }
    /// Whether that libfuse can set up passthrough (3.17+).
    public static var libfuseHasPassthrough: Bool { cfuse_passthrough_api() != 0 }
}

/// Which I/O mode each open inode uses, and the kernel's backing ids for passthrough. The kernel lets one
/// inode's open files use either FUSE's page cache (the daemon serves reads/writes: `cached`) or one
/// backing file (`passthrough`), never both at once (EIO at open), so the first open of an inode with no
/// open file chooses and later opens share its choice; a passthrough id is closed at the last release
/// (never right after the reply: an open of the same inode racing the close would get a new id for an
/// inode still using the old one).
///
/// The choice: read-only opens of files under `cachedReadLimit` bytes (1 MiB by default) are cached. Passthrough saves little
/// on a small file and costs a backing file per open (kernel 6.18 here: an OPEN round trip of about 41
/// against 19 µs, perf's fuse tracepoints), and every read through it drops FUSE's cached atime, so each
/// later stat is a GETATTR round trip; pages cached by FUSE are re-read with neither (grep -r over
/// /usr/include read again: 5.98x direct cached, 9.07x passthrough, Tools/bench/run fuse, same run). Writes and big
/// files pass through. Cached pages never go stale behind a passthrough write: a passthrough open (which
/// never keeps the cache) drops the inode's page cache, and nothing fills it while such a file is open.
final class BackingFiles: Sendable {
    let cachedReadLimit: Int

    private struct OpenInode {
        let backingID: Int32
        var opens: Int
    }

    /// Node ID -> its open files' mode. The lock is held across the ioctls so an open and the last release
    /// of one inode never interleave.
    private let table = Mutex([UInt64: OpenInode]())

    init(cachedReadLimit: Int = FileSystemOptions().cachedReadLimit) {
        self.cachedReadLimit = cachedReadLimit
    }

    /// Whether an open with `flags` could be cached (then the file's size decides).
    static func mayCache(flags: Int32) -> Bool { flags & O_ACCMODE == O_RDONLY && flags & O_TRUNC == 0 }

    /// Whether an open with `flags` of a regular file of `size` bytes would rather be cached.
    func prefersCache(flags: Int32, size: Int) -> Bool { Self.mayCache(flags: flags) && size < cachedReadLimit }

    /// The backing id for an open of `node` (0: cached): the mode its open files use, else `prefersCache`
    /// decides, and `register` makes an id from the open's fd (a positive id or -errno). Throws the errno
    /// the kernel gave (ELOOP: the backing filesystem stacks deeper than declared); the caller then serves
    /// the open through the daemon with `cachedOpen(node:)`. `throughDaemon`: the open must not start passthrough
    /// (RootShare); an inode already passing through keeps doing so (RootShare refuses a user's write then).
    func acquire(node: UInt64, flags: Int32, size: Int, throughDaemon: Bool = false, register: () -> Int32) throws -> Int32 {
        try table.withLock { t in
            if var inode = t[node] {
                inode.opens += 1
                t[node] = inode
                return inode.backingID
            }
            var id: Int32 = 0
            if !throughDaemon, !prefersCache(flags: flags, size: size) {
                id = register()
                guard id > 0 else { throw SystemError("passthrough open", "node \(node)", errno: -id) }
            }
            t[node] = OpenInode(backingID: id, opens: 1)
            return id
        }
    }

    /// An open of `node` through the daemon after the kernel refused it a backing file (none of its files
    /// is open: else `acquire` would have shared their mode).
    func cachedOpen(node: UInt64) {
        table.withLock { t in t[node, default: OpenInode(backingID: 0, opens: 0)].opens += 1 }
    }

    /// One open of `node` is gone; at the last, `closeID` drops its backing id (0 or -errno, returned).
    @discardableResult
    func release(node: UInt64, closeID: (Int32) -> Int32) -> Int32 {
        table.withLock { t in
            guard var inode = t[node] else { return 0 }
            inode.opens -= 1
            if inode.opens > 0 {
                t[node] = inode
                return 0
            }
            t[node] = nil
            return inode.backingID > 0 ? closeID(inode.backingID) : 0
        }
    }

    var openCount: Int { table.withLock { $0.count } }
}
