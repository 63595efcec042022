import CFuse
import Glibc
import LinuxBlock

/// A node inside a sandbox or pristine view (or one of their Linux partitions): every operation passes
/// through to the hidden mount (Passthrough*.swift).
struct PassBackend: NodeBackend {
    let fs: SandboxFileSystem
    let id: UInt64

    func lookup(_ req: fuse_req_t, _ name: RawName) throws -> Reply {
        do {
            let child = try fs.withPass(id) { try fs.lookUpChild($0, name) }
            return .entry(id: child.id, attr: child.attr, attrTimeout: fs.options.passthroughTimeout,
                          entryTimeout: fs.options.passthroughTimeout)
        } catch let error as SystemError where error.errno == ENOENT {
            // Names appear only through this daemon, which invalidates this for the kernel.
            return .negativeEntry(timeout: fs.options.passthroughTimeout)
        }
    }

    func getattr(fh: UInt64?) throws -> Reply { try fs.passGetattr(id, fh: fh) }

    func setattr(_ req: fuse_req_t, _ attr: stat, _ toSet: Int32, fh: UInt64?) throws -> Reply {
        try fs.passSetattr(id, attr, toSet, fh: fh, caller: Caller(req))
    }

    func readlink() throws -> Reply { try fs.passReadlink(id) }

    func mknod(_ req: fuse_req_t, _ name: RawName, mode: mode_t, rdev: dev_t) throws -> Reply {
        try fs.passMknod(id, name, mode: mode, rdev: rdev, caller: Caller(req))
    }

    func mkdir(_ req: fuse_req_t, _ name: RawName, mode: mode_t) throws -> Reply {
        try fs.passMkdir(id, name, mode: mode, caller: Caller(req))
    }

    func unlink(_ name: RawName) throws -> Reply { try fs.passUnlink(id, name, directory: false) }

    func rmdir(_ req: fuse_req_t, _ name: RawName) throws -> Reply { try fs.passUnlink(id, name, directory: true) }

    func symlink(_ req: fuse_req_t, _ name: RawName, target: RawName) throws -> Reply {
        try fs.passSymlink(id, name, target: target, caller: Caller(req))
    }

    func rename(_ name: RawName, to target: any NodeBackend, _ newName: RawName, flags: UInt32) throws -> Reply {
        if target is FatBackend { throw SystemError("rename", "across partitions", errno: EXDEV) }
        guard let target = target as? PassBackend else { throw fs.virtualRefusal("rename", name) }
        return try fs.passRename(id, name, target.id, newName, flags: flags)
    }

    func link(into target: any NodeBackend, _ newName: RawName) throws -> Reply {
        if target is FatBackend { throw SystemError("link", "FAT has no hard links", errno: EXDEV) }
        guard let target = target as? PassBackend else { throw fs.virtualRefusal("link", newName) }
        return try fs.passLink(id, newParent: target.id, newName)
    }

    func open(_ req: fuse_req_t, flags: Int32) throws -> Reply {
        try fs.passOpen(req, id, flags: flags, caller: Caller(req))
    }

    func create(_ req: fuse_req_t, _ name: RawName, mode: mode_t, flags: Int32) throws -> Reply {
        try fs.passCreate(req, id, name, mode: mode, flags: flags, caller: Caller(req))
    }

    func tmpfile(_ req: fuse_req_t, mode: mode_t, flags: Int32) throws -> Reply {
        try fs.passTmpfile(req, id, mode: mode, flags: flags, caller: Caller(req))
    }

    func opendir() throws -> Reply { try fs.passOpendir(id) }

    func statfs() throws -> Reply { try fs.passStatfs(id) }

    func setxattr(_ name: RawName, value: [UInt8], flags: Int32) throws -> Reply {
        try fs.passSetxattr(id, name, value: value, flags: flags)
    }

    func getxattr(_ name: RawName, size: Int) throws -> Reply { try fs.passGetxattr(id, name, size: size) }

    func listxattr(_ req: fuse_req_t, size: Int) throws -> Reply {
        try fs.passListxattr(id, size: size, caller: Caller(req))
    }

    func removexattr(_ name: RawName) throws -> Reply { try fs.passRemovexattr(id, name) }
}
