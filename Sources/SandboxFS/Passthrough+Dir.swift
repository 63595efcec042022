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
            return .bytes(try passReaddir(req, dir, size: size, offset: offset, plus: plus))
        case .fat(let fat)?:
            return .bytes(try fatReaddir(req, fat, size: size, offset: offset, plus: plus))
        case .file?, nil:
            throw SystemError("readdir", "handle \(fh)", errno: EBADF)
        }
    }

    private static func seek(_ dir: OpaquePointer, _ offset: Int64) {
        if offset == 0 { rewinddir(dir) } else { seekdir(dir, Int(offset)) }
    }

    private func passReaddir(_ req: fuse_req_t, _ handle: DirHandle, size: Int, offset: off_t, plus: Bool) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: max(size, 0))
        var used = 0
        let serial = handle.serial
        try handle.withStream { dir, stream in
            if Int64(offset) != stream.offset {
                Self.seek(dir, Int64(offset))
                stream.offset = Int64(offset)
            }
            let dirFD = dirfd(dir)
            try buffer.withUnsafeMutableBytes { raw in
                guard let base = raw.baseAddress else { return }
                while true {
                    errno = 0
                    guard let entry = SwiftGlibc.readdir(dir) else {
                        let saved = errno
                        if saved != 0 && used == 0 { throw SystemError("readdir", "sandbox \(serial)", errno: saved) }
                        break
                    }
                    let next = Int64(entry.pointee.d_off)
                    let type = UInt32(entry.pointee.d_type)
                    let rawIno = UInt64(entry.pointee.d_ino)
                    let remaining = size - used
                    let out = base.advanced(by: used).assumingMemoryBound(to: CChar.self)
                    let (needed, addedNode): (Int, UInt64?) = withUnsafePointer(to: &entry.pointee.d_name) { namePointer in
                        namePointer.withMemoryRebound(to: CChar.self, capacity: 256) { name in
                            let isDot = strcmp(name, ".") == 0 || strcmp(name, "..") == 0
                            var st = stat()
                            st.st_ino = numericCast(fuseInode(rawIno, dev: handle.dev, serial: serial))
                            st.st_mode = type << 12
                            guard plus else {
                                return (fuse_add_direntry(req, out, remaining, name, &st, off_t(next)), nil)
                            }
                            var e = fuse_entry_param()
                            var node: UInt64?
                            if isDot {
                                e.attr = st
                            } else {
                                // Every readdirplus entry but . and .. counts as a lookup.
                                let fd = openat(dirFD, name, clinux_O_PATH | O_NOFOLLOW | O_CLOEXEC)
                                guard fd >= 0 else { return (0, nil) } // vanished meanwhile: skip it
                                defer { close(fd) }
                                if let child = try? register(fd: fd, serial: serial, mountID: handle.mountID) {
                                    node = child.id
                                    e.ino = child.id
                                    e.attr = child.attr
                                    e.attr_timeout = options.passthroughTimeout
                                    e.entry_timeout = options.passthroughTimeout
                                } else {
                                    e.attr = st // e.g. a submount: listed, but the kernel must look it up
                                }
                            }
                            return (fuse_add_direntry_plus(req, out, remaining, name, &e, off_t(next)), node)
                        }
                    }
                    if needed > remaining {
                        if let addedNode { forget(addedNode, 1) }
                        Self.seek(dir, stream.offset) // the entry goes into the next buffer
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
