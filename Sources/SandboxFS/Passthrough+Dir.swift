import CFuse
import CLinux
import Glibc
import LinuxBlock

/// opendir/readdir/readdirplus/fsyncdir for passthrough directories, and the dispatch for virtual ones.
extension SandboxFileSystem {
    func passOpendir(_ id: UInt64) throws -> Reply {
        try withPass(id) { ctx in
            let fd = try ctx.open(flags: O_RDONLY | O_DIRECTORY)
            guard let dir = fdopendir(fd.raw) else { throw SystemError("fdopendir", ctx.object, errno: errno) }
            _ = fd.take() // the DIR stream owns it now (closedir)
            let handle = DirHandle(serial: ctx.node.serial, mountID: ctx.mountID,
                                   inode: fuseInode(ctx.node.key.ino, dev: ctx.node.key.dev, serial: ctx.node.serial),
                                   dev: ctx.node.key.dev, dir: dir)
            guard let fh = registry.open(.directory(handle), in: ctx.node.serial) else {
                throw SystemError("opendir", "sandbox \(ctx.node.serial) is going away", errno: ESTALE)
            }
            // Listings change only through this daemon, which the kernel sees: let it cache them.
            return .opened(fh: fh, keepCache: true, cacheReaddir: true)
        }
    }

    func virtualOpendir(_ id: UInt64, _ kind: NodeKind) throws -> Reply {
        let entries = try virtualListing(id, kind)
        let fh = registry.open(.virtualDirectory(entries))
        return .opened(fh: fh, keepCache: false, cacheReaddir: false)
    }

    func readdirReply(_ req: fuse_req_t, fh: UInt64, size: Int, offset: off_t, plus: Bool) throws -> Reply {
        switch registry.handle(fh) {
        case .virtualDirectory(let entries)?:
            return .bytes(virtualReaddir(req, entries, size: size, offset: offset, plus: plus))
        case .directory(let dir)?:
            return .bytes(try plus ? passReaddirPlus(req, dir, size: size, offset: offset)
                                   : passReaddir(req, dir, size: size, offset: offset))
        case .fat(let fat)?:
            return .bytes(try fatReaddir(req, fat, size: size, offset: offset, plus: plus))
        case .file?, nil:
            throw SystemError("readdir", "handle \(fh)", errno: EBADF)
        }
    }

    private func passReaddir(_ req: fuse_req_t, _ handle: DirHandle, size: Int, offset: off_t) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: max(size, 0))
        var used = 0
        try handle.withStream(at: offset) { dir, stream in
            try buffer.withUnsafeMutableBytes { raw in
                guard let base = raw.baseAddress else { return }
                while let entry = try handle.next(dir, first: used == 0) {
                    let next = Int64(entry.pointee.d_off)
                    var st = stat()
                    st.st_ino = numericCast(fuseInode(UInt64(entry.pointee.d_ino), dev: handle.dev, serial: handle.serial))
                    st.st_mode = UInt32(entry.pointee.d_type) << 12
                    let out = base.advanced(by: used).assumingMemoryBound(to: CChar.self)
                    let needed = withUnsafePointer(to: &entry.pointee.d_name) { namePointer in
                        namePointer.withMemoryRebound(to: CChar.self, capacity: 256) { name in
                            fuse_add_direntry(req, out, size - used, name, &st, off_t(next))
                        }
                    }
                    if needed > size - used {
                        DirHandle.unread(dir, stream)
                        break
                    }
                    used += needed
                    stream.offset = next
                }
            }
        }
        return Array(buffer.prefix(used))
    }

    func fsyncdir(fh: UInt64, datasync: Bool) throws -> Reply {
        guard case .directory(let handle)? = registry.handle(fh) else { return .ok }
        try handle.withStream { dir, _ in
            let fd = dirfd(dir)
            try systemCall("fsyncdir", "sandbox \(handle.serial)") { datasync ? fdatasync(fd) : SwiftGlibc.fsync(fd) }
        }
        return .ok
    }
}
