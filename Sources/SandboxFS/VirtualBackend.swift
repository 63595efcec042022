import CFuse
import Glibc
import LinuxBlock

/// A directory of the tree above the sandboxes (`/`, `/IMAGE/`, `/IMAGE/sandboxes/`; VirtualTree.swift):
/// read-only except mkdir/rmdir in `sandboxes/`, which make and discard sandboxes.
struct VirtualBackend: NodeBackend {
    let fs: SandboxFileSystem
    let id: UInt64
    let kind: NodeKind

    func lookup(_ req: fuse_req_t, _ name: RawName) throws -> Reply {
        // IMAGE/pristine's first lookup may wait for the image's preparation.
        if case .image = kind, name.string == SandboxFileSystem.pristineDirName {
            return fs.respondElsewhere(req, "lookup") { [fs, kind] in try fs.virtualLookup(kind, name) }
        }
        return try fs.virtualLookup(kind, name)
    }

    func getattr(fh: UInt64?) throws -> Reply { .attr(fs.virtualAttr(id), timeout: fs.options.virtualTimeout) }

    func setattr(_ req: fuse_req_t, _ attr: stat, _ toSet: Int32, fh: UInt64?) throws -> Reply {
        throw SystemError("setattr", "virtual directory", errno: EPERM)
    }

    func readlink() throws -> Reply { throw SystemError("readlink", "virtual directory", errno: EINVAL) }

    func mknod(_ req: fuse_req_t, _ name: RawName, mode: mode_t, rdev: dev_t) throws -> Reply {
        throw fs.virtualRefusal("mknod", name)
    }

    func mkdir(_ req: fuse_req_t, _ name: RawName, mode: mode_t) throws -> Reply {
        guard case .sandboxes(let image) = kind else { throw fs.virtualRefusal("mkdir", name) }
        // Slow (it may wait for the image's preparation): answered from a thread of its own.
        return fs.respondElsewhere(req, "mkdir") { [fs] in try fs.createSandbox(image: image, name: name) }
    }

    func unlink(_ name: RawName) throws -> Reply { throw fs.virtualRefusal("unlink", name) }

    func rmdir(_ req: fuse_req_t, _ name: RawName) throws -> Reply {
        guard case .sandboxes(let image) = kind else { throw fs.virtualRefusal("rmdir", name) }
        // Slow (waits for releases, tears down): answered from a thread of its own.
        return fs.respondElsewhere(req, "rmdir") { [fs] in try fs.destroySandbox(image: image, name: name) }
    }

    func symlink(_ req: fuse_req_t, _ name: RawName, target: RawName) throws -> Reply {
        throw fs.virtualRefusal("symlink", name)
    }

    func rename(_ name: RawName, to target: any NodeBackend, _ newName: RawName, flags: UInt32) throws -> Reply {
        if target is FatBackend { throw SystemError("rename", "across partitions", errno: EXDEV) }
        throw fs.virtualRefusal("rename", name)
    }

    func link(into target: any NodeBackend, _ newName: RawName) throws -> Reply {
        if target is FatBackend { throw SystemError("link", "FAT has no hard links", errno: EXDEV) }
        throw fs.virtualRefusal("link", newName)
    }

    func open(_ req: fuse_req_t, flags: Int32) throws -> Reply {
        throw SystemError("open", "virtual directory", errno: EISDIR)
    }

    func create(_ req: fuse_req_t, _ name: RawName, mode: mode_t, flags: Int32) throws -> Reply {
        throw fs.virtualRefusal("create", name)
    }

    func tmpfile(_ req: fuse_req_t, mode: mode_t, flags: Int32) throws -> Reply {
        throw SystemError("tmpfile", "virtual directory", errno: EOPNOTSUPP)
    }

    func opendir() throws -> Reply { try fs.virtualOpendir(id, kind) }

    func statfs() throws -> Reply { .statfs(fs.virtualStatfs()) }

    func setxattr(_ name: RawName, value: [UInt8], flags: Int32) throws -> Reply {
        throw SystemError("setxattr", "virtual directory", errno: EPERM)
    }

    func getxattr(_ name: RawName, size: Int) throws -> Reply {
        throw SystemError("getxattr", "virtual directory", errno: ENODATA)
    }

    func listxattr(_ req: fuse_req_t, size: Int) throws -> Reply { size == 0 ? .xattrSize(0) : .bytes([]) }

    func removexattr(_ name: RawName) throws -> Reply {
        throw SystemError("removexattr", "virtual directory", errno: EPERM)
    }
}
