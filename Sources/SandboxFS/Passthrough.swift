import CFuse
import CLinux
import Glibc
import LinuxBlock
import Sandbox
import SandboxDiff

/// Everything a passthrough request needs about its node, valid while the request holds the mount fd.
struct PassContext {
    let id: UInt64
    let node: PassNode
    let mountFD: Int32
    let mountID: Int32
    let cache: HandleCache
    /// The sandbox's change journal (dm), nil where the engine keeps its own change set.
    let journal: ChangeJournal?

    var object: String { "sandbox \(node.serial) inode \(node.key.ino)" }

    /// Opens the inode from its file handle (never by path: nothing in the image is followed).
    func open(flags: Int32) throws -> FileDescriptor {
        FileDescriptor(adopting: try systemCall("open_by_handle_at", object) {
            node.handle.withFileHandle { clinux_open_by_handle_at(mountFD, $0, flags | O_CLOEXEC) }
        })
    }

    /// Runs `body` with an O_PATH fd of the node, from the bounded cache or freshly reopened into it.
    @discardableResult
    func withPathFD<R>(_ body: (Int32) throws -> R) throws -> R {
        let held: (lease: FdLease, fd: Int32)
        if let hit = cache.acquire(id) {
            held = hit
        } else {
            held = cache.insert(id, serial: node.serial, fd: try open(flags: clinux_O_PATH))
        }
        defer { held.lease.release() }
        return try body(held.fd)
    }

    /// "/proc/self/fd/N": a path to the inode itself for calls that have no fd form (O_PATH fds refuse
    /// fchmod/fgetxattr). Only for non-symlinks, where the final jump follows nothing further.
    static func procPath(_ fd: Int32) -> String { "/proc/self/fd/\(fd)" }

    /// Before a request adds, removes or replaces `name` in this directory (`tree`: moves it).
    func recordEntry(_ parentFD: Int32, _ name: RawName, tree: Bool = false) {
        journal?.recordEntry(in: parentFD, name: name.bytes, mountFD: mountFD, tree: tree)
    }

    /// Before a request changes this node's content, attributes or xattrs.
    func recordNode(_ fd: Int32) {
        journal?.recordInode(fd, mountFD: mountFD)
    }
}

extension SandboxFileSystem {
    /// Resolves a passthrough node and holds its sandbox's mount fd for the duration of `body`, so
    /// teardown (which waits for that fd) never runs under a request.
    func withPass<R>(_ id: UInt64, _ body: (PassContext) throws -> R) throws -> R {
        for attempt in 0..<2 {
            let (node, sandbox) = try registry.passTarget(id)
            if let sandbox, let mountFD = sandbox.mount.acquire() {
                defer { sandbox.mount.release() }
                return try body(PassContext(id: id, node: node, mountFD: mountFD, mountID: sandbox.mountID, cache: cache,
                                            journal: sandbox.ref.journal))
            }
            // A pristine view released while idle comes back; a sandbox's node stays stale.
            guard attempt == 0, try reattachPristine(node.serial) else { break }
        }
        throw SystemError("resolve", "node \(id) of a discarded sandbox", errno: ESTALE)
    }

    /// Registers the inode `fd` refers to (fd may be O_PATH or open) as a node with one more lookup.
    /// Returns its node ID and the attributes to hand the kernel.
    func register(fd: Int32, serial: UInt64, mountID: Int32) throws -> (id: UInt64, attr: stat) {
        var st = stat()
        try systemCall("fstat", "sandbox \(serial) fd \(fd)") {
            fstatat(fd, "", &st, clinux_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
        }
        let (handle, handleMountID) = try FileHandleBytes.of(fd: fd, object: "sandbox \(serial) inode \(st.st_ino)")
        // A submount inside the hidden mount cannot be reopened through the mount fd: refuse it.
        guard handleMountID == mountID else {
            throw SystemError("lookup", "sandbox \(serial) inode \(st.st_ino) lies on another mount", errno: EXDEV)
        }
        let key = InodeKey(serial: serial, dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))
        // A partition's mount point: its root is shown instead, as a kernel mount covers the directory.
        if UInt32(st.st_mode) & UInt32(SwiftGlibc.S_IFMT) == UInt32(SwiftGlibc.S_IFDIR),
           let part = registry.partition(covering: key) {
            return try partitionRoot(part)
        }
        let id = try registry.lookUp(key: key, handle: handle, type: UInt32(st.st_mode) & UInt32(SwiftGlibc.S_IFMT))
        guard let id else {
            logger.error("lookup in sandbox \(serial): the node table is full (ENFILE)")
            throw SystemError("lookup", "sandbox \(serial) inode \(st.st_ino): the node table is full", errno: ENFILE)
        }
        return (id, fuseAttr(st, serial: serial))
    }

    /// Looks `name` up under the directory `parent` without following it, and registers it.
    func lookUpChild(_ ctx: PassContext, _ name: RawName) throws -> (id: UInt64, attr: stat) {
        guard name.isPlainComponent else { throw SystemError("lookup", "name \(name.display)", errno: name.componentErrno) }
        return try ctx.withPathFD { parentFD in
            let fd = try systemCall("openat", "\(ctx.object)/\(name.display)") {
                name.withCString { openat(parentFD, $0, clinux_O_PATH | O_NOFOLLOW | O_CLOEXEC) }
            }
            defer { close(fd) }
            return try register(fd: fd, serial: ctx.node.serial, mountID: ctx.mountID)
        }
    }

    /// Attributes as the kernel sees them: the inode number made unique across the sandbox's filesystems
    /// and across sandboxes (InodeNumbers).
    func fuseAttr(_ st: stat, serial: UInt64) -> stat {
        var attr = st
        attr.st_ino = numericCast(fuseInode(UInt64(st.st_ino), dev: UInt64(st.st_dev), serial: serial))
        return attr
    }

    func fuseInode(_ ino: UInt64, dev: UInt64, serial: UInt64) -> UInt64 {
        inodeNumbers.number(ino: ino, dev: dev, serial: serial)
    }

    func forget(_ id: UInt64, _ count: UInt64) {
        if id >= 1 << 63 { return fatForget((id >> 40) & (1 << 23 - 1), id & (1 << 40 - 1), count) }
        let (erased, overForgot) = registry.forget(id, count)
        if overForgot { logger.error("forget of node \(id) by \(count) went below its lookup count: node erased (a bookkeeping bug)") }
        if erased { cache.drop(id) }
    }
}
