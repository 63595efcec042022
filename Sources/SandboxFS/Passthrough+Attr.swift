import CFuse
import CLinux
import Glibc
import LinuxBlock
import Sandbox

/// getattr, setattr, readlink, statfs for passthrough nodes.
extension SandboxFileSystem {
    func passGetattr(_ id: UInt64, fh: UInt64?) throws -> Reply {
        if let fh, let file = openFile(fh) {
            let serial = file.serial
            let st = try file.lease.with { fd in try fstatFD(fd, "getattr") }
            return .attr(fuseAttr(st, serial: serial), timeout: options.passthroughTimeout)
        }
        return try withPass(id) { ctx in
            let st = try ctx.withPathFD { try fstatFD($0, "getattr \(ctx.object)") }
            return .attr(fuseAttr(st, serial: ctx.node.serial), timeout: options.passthroughTimeout)
        }
    }

    func fstatFD(_ fd: Int32, _ what: @autoclosure () -> String) throws -> stat {
        var st = stat()
        try systemCall("fstat", what()) { fstatat(fd, "", &st, clinux_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) }
        return st
    }

    /// The fields of a SETATTR that change something; a request with none of them is what the kernel's FUSE
    /// client sends for a change of ctime alone (chown(-1, -1), or a set-id clearing it left to us).
    private static let changingFields = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE
        | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW

    func passSetattr(_ id: UInt64, _ attr: stat, _ toSet: Int32, fh: UInt64?, caller: Caller) throws -> Reply {
        let file = fh.flatMap { openFile($0) }
        return try withPass(id) { ctx in
            try ctx.withPathFD { pathFD in
                let object = ctx.object
                let proc = PassContext.procPath(pathFD)
                let ctimeOnly = toSet & Self.changingFields == 0
                var mode: mode_t? = toSet & FUSE_SET_ATTR_MODE != 0 ? attr.st_mode & 0o7777 : nil
                // A chown, truncate or ctime-only change by a caller without CAP_FSETID clears setgid bits that
                // the kernel's FUSE client leaves (not group-executable, caller not in the group).
                if !ctx.node.isDirectory, !ctx.node.isSymlink,
                   ctimeOnly || toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE) != 0 {
                    let current = try fstatFD(pathFD, "getattr \(object)")
                    let base = mode ?? UInt32(current.st_mode) & 0o7777
                    let drop = caller.setIDBitsToDrop(mode: base, gid: current.st_gid)
                    if drop != 0 { mode = base & ~drop }
                }
                if let mode {
                    // Linux has no symlink modes; fchmod refuses O_PATH fds, so go through /proc.
                    guard !ctx.node.isSymlink else { throw SystemError("chmod", object, errno: EOPNOTSUPP) }
                    try systemCall("chmod", object) { chmod(proc, mode) }
                }
                if ctimeOnly {
                    // chown(-1, -1) changes ctime and nothing else (set-id bits are handled above).
                    try systemCall("chown", object) { fchownat(pathFD, "", uid_t.max, gid_t.max, clinux_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) }
                }
                if toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 {
                    let uid = toSet & FUSE_SET_ATTR_UID != 0 ? attr.st_uid : uid_t.max
                    let gid = toSet & FUSE_SET_ATTR_GID != 0 ? attr.st_gid : gid_t.max
                    try systemCall("chown", object) {
                        fchownat(pathFD, "", uid, gid, clinux_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
                    }
                }
                if toSet & FUSE_SET_ATTR_SIZE != 0 {
                    if let file {
                        try file.lease.with { fd in try systemCall("ftruncate", object) { ftruncate(fd, attr.st_size) } }
                    } else {
                        let fd = try ctx.open(flags: O_WRONLY | O_NONBLOCK)
                        try systemCall("ftruncate", object) { ftruncate(fd.raw, attr.st_size) }
                    }
                }
                if toSet & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME) != 0 {
                    var times = [Self.timeToSet(attr.st_atim, set: toSet & FUSE_SET_ATTR_ATIME != 0,
                                                now: toSet & FUSE_SET_ATTR_ATIME_NOW != 0),
                                 Self.timeToSet(attr.st_mtim, set: toSet & FUSE_SET_ATTR_MTIME != 0,
                                                now: toSet & FUSE_SET_ATTR_MTIME_NOW != 0)]
                    if let file {
                        try file.lease.with { fd in try systemCall("futimens", object) { futimens(fd, &times) } }
                    } else if ctx.node.isSymlink {
                        try systemCall("utimensat", object) {
                            utimensat(pathFD, "", &times, clinux_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
                        }
                    } else {
                        try systemCall("utimensat", object) { utimensat(AT_FDCWD, proc, &times, 0) }
                    }
                }
                let st = try fstatFD(pathFD, "getattr \(object)")
                return .attr(fuseAttr(st, serial: ctx.node.serial), timeout: options.passthroughTimeout)
            }
        }
    }

    static func timeToSet(_ value: timespec, set: Bool, now: Bool) -> timespec {
        if now { return timespec(tv_sec: 0, tv_nsec: clinux_UTIME_NOW) }
        if set { return value }
        return timespec(tv_sec: 0, tv_nsec: clinux_UTIME_OMIT)
    }

    func passReadlink(_ id: UInt64) throws -> Reply {
        try withPass(id) { ctx in
            guard ctx.node.isSymlink else { throw SystemError("readlink", ctx.object, errno: EINVAL) }
            return try ctx.withPathFD { fd in
                var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
                let count = try systemCall("readlink", ctx.object) {
                    buffer.withUnsafeMutableBufferPointer { bytes in
                        bytes.withMemoryRebound(to: CChar.self) { chars in
                            // Never nil: the buffer is PATH_MAX + 1 long.
                            readlinkat(fd, "", chars.baseAddress!, chars.count)
                        }
                    }
                }
                guard count < buffer.count else { throw SystemError("readlink", ctx.object, errno: ENAMETOOLONG) }
                return .readlink(Array(buffer.prefix(count)))
            }
        }
    }

    func passStatfs(_ id: UInt64) throws -> Reply {
        try withPass(id) { ctx in
            var st = statvfs()
            try systemCall("fstatvfs", ctx.object) { fstatvfs(ctx.mountFD, &st) }
            let base = registry.baseUse(ctx.node.serial) ?? BaseUse()
            return .statfs(base.adding(to: st))
        }
    }
}
