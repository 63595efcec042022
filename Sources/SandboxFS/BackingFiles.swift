import CFuse
import Glibc
import LinuxBlock

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

/// The kernel's backing ids for passthrough, one per inode while any FUSE file of it is open: the kernel
/// refuses (EIO at open) a second backing file for an inode whose open files use another, so every open
/// of an inode shares one id, and the id is closed at the last release (never right after the reply: an
/// open of the same inode racing the close would get a new id for an inode still using the old one).
final class BackingFiles: @unchecked Sendable {
    private struct Backing {
        let id: Int32
        var opens: Int
    }

    /// Node ID -> backing. The lock is held across the ioctls so an open and the last release of one
    /// inode never interleave.
    private let table = Locked([UInt64: Backing]())

    /// The backing id for an open of `node` whose fd is `fd` (registered when the node has none yet).
    /// Throws the errno the kernel gave (ELOOP: the backing filesystem stacks deeper than declared).
    func acquire(_ req: fuse_req_t, node: UInt64, fd: Int32) throws -> Int32 {
        try table.withLock { t in
            if var backing = t[node] {
                backing.opens += 1
                t[node] = backing
                return backing.id
            }
            let id = cfuse_passthrough_open(req, fd)
            guard id > 0 else { throw SystemError("passthrough open", "node \(node)", errno: -id) }
            t[node] = Backing(id: id, opens: 1)
            return id
        }
    }

    /// One open of `node` is gone; closes the id when it was the last. Returns -errno if that close failed.
    @discardableResult
    func release(_ session: OpaquePointer?, node: UInt64) -> Int32 {
        table.withLock { t in
            guard var backing = t[node] else { return 0 }
            backing.opens -= 1
            if backing.opens > 0 {
                t[node] = backing
                return 0
            }
            t[node] = nil
            guard let session else { return 0 }
            return cfuse_passthrough_close(session, backing.id)
        }
    }

    var count: Int { table.withLock { $0.count } }
}
