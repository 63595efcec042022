import CLinux
import Glibc

/// Extended attributes through "/proc/self/fd/N" of the node's O_PATH fd (the *xattr calls have no
/// AT_EMPTY_PATH form and f*xattr refuses O_PATH fds). Symlinks are never followed: they get what the
/// kernel gives user.* on a symlink (EPERM to set) and no attributes to read.
extension SandboxFileSystem {
    func passGetxattr(_ id: UInt64, _ name: RawName, size: Int) throws -> Reply {
        try withPass(id) { ctx in
            guard !ctx.node.isSymlink else { throw FSError(ENODATA, "getxattr", ctx.object) }
            return try ctx.withPathFD { fd in
                let path = PassContext.procPath(fd)
                if size == 0 {
                    let needed = try sys("getxattr", ctx.object) { name.withCString { clinux_getxattr(path, $0, nil, 0) } }
                    return .xattrSize(needed)
                }
                var buffer = [UInt8](repeating: 0, count: size)
                let count = try sys("getxattr", ctx.object) {
                    name.withCString { n in buffer.withUnsafeMutableBytes { clinux_getxattr(path, n, $0.baseAddress, $0.count) } }
                }
                return .bytes(Array(buffer.prefix(count)))
            }
        }
    }

    func passListxattr(_ id: UInt64, size: Int) throws -> Reply {
        try withPass(id) { ctx in
            guard !ctx.node.isSymlink else { return size == 0 ? .xattrSize(0) : .bytes([]) }
            return try ctx.withPathFD { fd in
                let path = PassContext.procPath(fd)
                if size == 0 {
                    return .xattrSize(try sys("listxattr", ctx.object) { clinux_listxattr(path, nil, 0) })
                }
                var buffer = [UInt8](repeating: 0, count: size)
                let count = try sys("listxattr", ctx.object) {
                    buffer.withUnsafeMutableBytes { clinux_listxattr(path, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
                }
                return .bytes(Array(buffer.prefix(count)))
            }
        }
    }

    func passSetxattr(_ id: UInt64, _ name: RawName, value: [UInt8], flags: Int32) throws -> Reply {
        try withPass(id) { ctx in
            guard !ctx.node.isSymlink else { throw FSError(EPERM, "setxattr", ctx.object) }
            return try ctx.withPathFD { fd in
                let path = PassContext.procPath(fd)
                try sys("setxattr", ctx.object) {
                    name.withCString { n in value.withUnsafeBytes { clinux_setxattr(path, n, $0.baseAddress, $0.count, flags) } }
                }
                return .ok
            }
        }
    }

    func passRemovexattr(_ id: UInt64, _ name: RawName) throws -> Reply {
        try withPass(id) { ctx in
            guard !ctx.node.isSymlink else { throw FSError(EPERM, "removexattr", ctx.object) }
            return try ctx.withPathFD { fd in
                let path = PassContext.procPath(fd)
                try sys("removexattr", ctx.object) { name.withCString { clinux_removexattr(path, $0) } }
                return .ok
            }
        }
    }
}
