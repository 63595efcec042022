import CFuse
import Glibc
import LinuxBlock

/// A node of a FAT partition, served from FATFS (FatOps.swift). What FAT cannot hold (symlinks, hard
/// links, device nodes, xattrs) is refused as Linux vfat refuses it.
struct FatBackend: NodeBackend {
    let fs: SandboxFileSystem
    /// The partition's serial.
    let serial: UInt64
    /// FATFS's node ID.
    let node: UInt64

    func lookup(_ req: fuse_req_t, _ name: RawName) throws -> Reply { try fs.fatLookup(serial, node, name) }

    func getattr(fh: UInt64?) throws -> Reply { try fs.fatGetattr(serial, node) }

    func setattr(_ req: fuse_req_t, _ attr: stat, _ toSet: Int32, fh: UInt64?) throws -> Reply {
        try fs.fatSetattr(serial, node, attr, toSet)
    }

    func readlink() throws -> Reply { throw SystemError("readlink", "FAT has no symbolic links", errno: EINVAL) }

    func mknod(_ req: fuse_req_t, _ name: RawName, mode: mode_t, rdev: dev_t) throws -> Reply {
        throw SystemError("mknod", "FAT holds regular files and directories only", errno: EPERM)
    }

    func mkdir(_ req: fuse_req_t, _ name: RawName, mode: mode_t) throws -> Reply {
        try fs.fatMkdir(serial, node, name, mode: mode)
    }

    func unlink(_ name: RawName) throws -> Reply { try fs.fatUnlink(serial, node, name, directory: false) }

    func rmdir(_ req: fuse_req_t, _ name: RawName) throws -> Reply { try fs.fatUnlink(serial, node, name, directory: true) }

    func symlink(_ req: fuse_req_t, _ name: RawName, target: RawName) throws -> Reply {
        throw SystemError("symlink", "FAT has no symbolic links", errno: EPERM)
    }

    func rename(_ name: RawName, to target: any NodeBackend, _ newName: RawName, flags: UInt32) throws -> Reply {
        guard let target = target as? FatBackend, target.serial == serial else {
            throw SystemError("rename", "across partitions", errno: EXDEV)
        }
        return try fs.fatRename(serial, node, name, target.node, newName, flags: flags)
    }

    func link(into target: any NodeBackend, _ newName: RawName) throws -> Reply {
        throw SystemError("link", "FAT has no hard links", errno: target is FatBackend ? EPERM : EXDEV)
    }

    func open(_ req: fuse_req_t, flags: Int32) throws -> Reply {
        try fs.fatOpen(serial, node, flags: flags, directory: false)
    }

    func create(_ req: fuse_req_t, _ name: RawName, mode: mode_t, flags: Int32) throws -> Reply {
        try fs.fatCreate(serial, node, name, mode: mode, flags: flags)
    }

    func tmpfile(_ req: fuse_req_t, mode: mode_t, flags: Int32) throws -> Reply {
        throw SystemError("tmpfile", "FAT partition", errno: EOPNOTSUPP)
    }

    func opendir() throws -> Reply { try fs.fatOpen(serial, node, flags: O_RDONLY, directory: true) }

    func statfs() throws -> Reply { try fs.fatStatfs(serial) }

    func setxattr(_ name: RawName, value: [UInt8], flags: Int32) throws -> Reply {
        throw SystemError("setxattr", "FAT has no extended attributes", errno: EOPNOTSUPP)
    }

    func getxattr(_ name: RawName, size: Int) throws -> Reply {
        throw SystemError("getxattr", "FAT has no extended attributes", errno: ENODATA)
    }

    func listxattr(_ req: fuse_req_t, size: Int) throws -> Reply { size == 0 ? .xattrSize(0) : .bytes([]) }

    func removexattr(_ name: RawName) throws -> Reply {
        throw SystemError("removexattr", "FAT has no extended attributes", errno: EOPNOTSUPP)
    }
}
