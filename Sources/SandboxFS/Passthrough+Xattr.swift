import CLinux
import Glibc
import LinuxBlock

/// Extended attributes through "/proc/self/fd/N" of the node's O_PATH fd (the *xattr calls have no
/// AT_EMPTY_PATH form before Linux 6.13, and f*xattr refuses O_PATH fds). For a symlink that magic link
/// resolves to the symlink itself, never to its target (the path walk ends at the jump), so symlinks get
/// their own xattrs as on the filesystem: trusted.* and security.*, EPERM for user.*.
extension SandboxFileSystem {
    func passGetxattr(_ id: UInt64, _ name: RawName, size: Int) throws -> Reply {
        try withPass(id) { ctx in
            return try ctx.withPathFD { fd in
                let path = PassContext.procPath(fd)
                do {
                    if size == 0 {
                        let needed = try systemCall("getxattr", ctx.object) { name.withCString { clinux_getxattr(path, $0, nil, 0) } }
                        return .xattrSize(needed)
                    }
                    var buffer = [UInt8](repeating: 0, count: size)
                    let count = try systemCall("getxattr", ctx.object) {
                        name.withCString { n in buffer.withUnsafeMutableBytes { clinux_getxattr(path, n, $0.baseAddress, $0.count) } }
                    }
                    return .bytes(Array(buffer.prefix(count)))
                } catch let error as SystemError where error.errno == EOPNOTSUPP && Self.posixACLNames.contains(name.bytes) {
                    // A filesystem without ACLs (squashfs) has none: Linux 6.2 and later answer ENODATA, 6.1 EOPNOTSUPP.
                    // The kernel's FUSE permission check asks for the ACL of every group-accessible directory it
                    // walks through and fails the walk with any error but ENODATA (6.1: lstat of a file under a
                    // squashfs's 0750 directory gave EOPNOTSUPP).
                    throw SystemError("getxattr", "\(ctx.object) (no ACLs on its filesystem)", errno: ENODATA)
                }
            }
        }
    }

    static let posixACLNames: [[UInt8]] = [Array("system.posix_acl_access".utf8), Array("system.posix_acl_default".utf8)]

    func passListxattr(_ id: UInt64, size: Int, caller: Caller) throws -> Reply {
        try withPass(id) { ctx in
            return try ctx.withPathFD { fd in
                let path = PassContext.procPath(fd)
                let needed = try systemCall("listxattr", ctx.object) { clinux_listxattr(path, nil, 0) }
                var buffer = [UInt8](repeating: 0, count: max(needed, 1))
                let count = try systemCall("listxattr", ctx.object) {
                    buffer.withUnsafeMutableBytes { clinux_listxattr(path, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
                }
                var list = Array(buffer.prefix(count))
                // The filesystem lists trusted.* only to CAP_SYS_ADMIN, and the lister here is the daemon:
                // hide them from callers without it, as the kernel would.
                let trusted = Array("trusted.".utf8)
                let names = list.split(separator: 0)
                if names.contains(where: { $0.starts(with: trusted) }), !caller.hasSysAdmin {
                    list = names.filter { !$0.starts(with: trusted) }.flatMap { Array($0) + [0] }
                }
                if size == 0 { return .xattrSize(list.count) }
                guard list.count <= size else { throw SystemError("listxattr", ctx.object, errno: ERANGE) }
                return .bytes(list)
            }
        }
    }

    func passSetxattr(_ id: UInt64, _ name: RawName, value: [UInt8], flags: Int32) throws -> Reply {
        try withPass(id) { ctx in
            return try ctx.withPathFD { fd in
                let path = PassContext.procPath(fd)
                try requireUserShare(fd: fd, bytes: value.count, ctx.object)
                try systemCall("setxattr", ctx.object) {
                    name.withCString { n in value.withUnsafeBytes { clinux_setxattr(path, n, $0.baseAddress, $0.count, flags) } }
                }
                return .ok
            }
        }
    }

    func passRemovexattr(_ id: UInt64, _ name: RawName) throws -> Reply {
        try withPass(id) { ctx in
            return try ctx.withPathFD { fd in
                let path = PassContext.procPath(fd)
                try systemCall("removexattr", ctx.object) { name.withCString { clinux_removexattr(path, $0) } }
                return .ok
            }
        }
    }
}
