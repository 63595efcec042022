import CFuse
import CLinux
import Glibc
import LinuxBlock

/// Open files: fi->fh names a Registry handle; each holds an fd opened from the inode's file handle.
extension SandboxFileSystem {
    /// Makes `fd` (opened with `flags`) a file handle, counted as open in its sandbox (rmdir waits for its
    /// release). With passthrough, BackingFiles chooses the open's I/O mode (and its backing id).
    func addOpenFile(_ req: fuse_req_t, fd owned: consuming FileDescriptor, flags: Int32, serial: UInt64, node: UInt64,
                     inode: UInt64) throws -> (fh: UInt64, backingID: Int32) {
        let fd = owned.raw
        var backingID: Int32 = 0
        let tracked = dataPath == .passthrough
        let userWrites = !RequestUID.isRoot && Self.writes(flags)
        if tracked {
            let st = try? fstatFD(fd, "open")
            do {
                // RootShare: passthrough only for files no user but root may write, never for a user's write.
                backingID = try backings.acquire(node: node, flags: flags, size: Int(st?.st_size ?? 0),
                                                 throughDaemon: userWrites || !(st.map(Self.onlyRootWrites) ?? false)) {
                    cfuse_passthrough_open(req, fd)
                }
            } catch {
                // A file the kernel refuses as backing (every open of it would be refused alike) goes
                // through the daemon instead.
                logger.warning("sandbox \(serial) inode \(inode): no passthrough, served through the daemon: \(error)")
                backings.cachedOpen(node: node)
            }
            if backingID > 0 && userWrites {
                backings.release(node: node, closeID: closeBacking)
                throw SystemError("open", "inode \(inode) for writing by a user other than root: it is open through "
                                  + "passthrough, where root's share of the store cannot be kept", errno: ETXTBSY)
            }
        }
        let modeNode: UInt64? = tracked ? node : nil
        let lease = FdLease(owned)
        do {
            let file = OpenFile(serial: serial, node: node, inode: inode, lease: lease, modeNode: modeNode)
            guard let fh = registry.open(.file(file), in: serial) else {
                throw SystemError("open", "sandbox \(serial) is going away", errno: ESTALE)
            }
            // Before the reply: no write of this handle can come earlier.
            if userWrites { userWriters.add(fh: fh, node: node) }
            return (fh, backingID)
        } catch {
            lease.retire()
            if let modeNode { backings.release(node: modeNode, closeID: closeBacking) }
            throw error
        }
    }

    /// Drops a passthrough backing id; a failure is logged (nothing else to do about it).
    func closeBacking(_ id: Int32) -> Int32 {
        guard let session else { return 0 }
        let rc = cfuse_passthrough_close(session, id)
        if rc != 0 { logger.warning("closing passthrough backing id \(id) failed: \(SystemError.describe(-rc))") }
        return rc
    }

    func openFile(_ fh: UInt64) -> OpenFile? {
        if case .file(let file)? = registry.handle(fh) { return file }
        return nil
    }

    private func requireFile(_ fh: UInt64) throws -> OpenFile {
        guard let file = openFile(fh) else { throw SystemError("file handle", "\(fh)", errno: EBADF) }
        return file
    }

    func passOpen(_ req: fuse_req_t, _ id: UInt64, flags: Int32, caller: Caller) throws -> Reply {
        try withPass(id) { ctx in
            guard !ctx.node.isDirectory else { throw SystemError("open", ctx.object, errno: EISDIR) }
            guard !ctx.node.isSymlink else { throw SystemError("open", ctx.object, errno: ELOOP) }
            // Opening for writing may copy the file up into the store.
            if Self.writes(flags) { try requireUserShare(fd: ctx.mountFD, ctx.object) }
            let fd = try ctx.open(flags: hiddenOpenFlags(flags) & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW))
            if flags & O_TRUNC != 0 { try dropSetIDBitsOnTruncate(fd.raw, caller, ctx.object) }
            let file = try addOpenFile(req, fd: fd, flags: flags, serial: ctx.node.serial, node: id,
                                       inode: fuseInode(ctx.node.key.ino, dev: ctx.node.key.dev, serial: ctx.node.serial))
            // Only this daemon writes the hidden mount, so cached pages stay valid across opens (see
            // BackingFiles for passthrough writes). The kernel refuses keep_cache with passthrough.
            return .opened(fh: file.fh, keepCache: file.backingID == 0 && flags & O_TRUNC == 0,
                           cacheReaddir: false, backingID: file.backingID)
        }
    }

    /// open(O_TRUNC) of a regular file clears set-id bits as a truncate does, but with atomic_o_trunc the
    /// kernel's FUSE client drops the mode change it computed for that (fuse_do_setattr returns early for
    /// ATTR_OPEN): the daemon, which truncated as root, clears them for a caller without CAP_FSETID.
    private func dropSetIDBitsOnTruncate(_ fd: Int32, _ caller: Caller, _ object: String) throws {
        let st = try fstatFD(fd, "getattr \(object)")
        guard UInt32(st.st_mode) & UInt32(SwiftGlibc.S_IFMT) == UInt32(SwiftGlibc.S_IFREG) else { return }
        let mode = UInt32(st.st_mode) & 0o7777
        let drop = caller.setIDBitsToDrop(mode: mode, gid: st.st_gid)
        guard drop != 0 else { return }
        try systemCall("fchmod", object) { fchmod(fd, mode & ~drop) }
    }

    /// Forgets a file or directory handle. Its sandbox counts it as open until its fd is closed, which happens
    /// once requests still using it are done (a read whose reply the kernel already has, so it sent RELEASE):
    /// an rmdir that sees the count drop to 0 finds nothing of it left on the hidden mount. A file's RELEASE
    /// does not wait for that: over io_uring it runs on its CPU queue's only thread, which it would stall, and
    /// a request holding the fd that came in on that queue behind it would never run (rmdir hung so).
    func release(fh: UInt64) {
        guard let handle = registry.removeHandle(fh) else { return }
        userWriters.remove(fh: fh)
        hooks.handleRemoved?(fh)
        let serial: UInt64
        switch handle {
        case .file(let file):
            let node = file.modeNode
            file.lease.retire(whenClosed: { [self] in
                if let node { backings.release(node: node, closeID: closeBacking) }
                registry.closed(in: file.serial)
            })
            return
        case .directory(let dir):
            dir.close() // takes the stream lock: waits for a readdir in flight
            serial = dir.serial
        case .virtualDirectory:
            return
        case .fat(let fat):
            serial = fat.serial
        }
        registry.closed(in: serial)
    }

    /// Replies to a read from the fd (libfuse reads it, or splices when enabled). Replies itself.
    func passRead(_ req: fuse_req_t, fh: UInt64, size: Int, offset: off_t) {
        guard let file = openFile(fh), let fd = file.lease.acquire() else {
            fuse_reply_err(req, EBADF)
            return
        }
        defer { file.lease.release() }
        // The lease keeps the fd open while libfuse reads it; no lock is held here.
        _ = cfuse_reply_data_fd(req, fd, size, offset)
    }

    func passWrite(fh: UInt64, buffers: UnsafeMutablePointer<fuse_bufvec>, offset: off_t) throws -> Reply {
        let file = try requireFile(fh)
        return try file.lease.with { fd in
            try withUserShare(node: file.node, bytes: fuse_buf_size(buffers), "file handle \(fh)", fd: fd) {
                let written = cfuse_write_buf_to_fd(buffers, fd, offset)
                guard written >= 0 else {
                    let code = Int32(clamping: -written)
                    throw SystemError("write", "file handle \(fh)", errno: code == 0 ? EIO : code)
                }
                return .written(written)
            }
        }
    }

    func passFsync(fh: UInt64, datasync: Bool) throws -> Reply {
        let file = try requireFile(fh)
        return try file.lease.with { fd in
            try systemCall(datasync ? "fdatasync" : "fsync", "file handle \(fh)") { datasync ? fdatasync(fd) : SwiftGlibc.fsync(fd) }
            return .ok
        }
    }

    func passFallocate(fh: UInt64, mode: Int32, offset: off_t, length: off_t) throws -> Reply {
        let file = try requireFile(fh)
        return try file.lease.with { fd in
            _ = try withUserShare(node: file.node, bytes: Int(clamping: length), "file handle \(fh)", fd: fd) {
                try systemCall("fallocate", "file handle \(fh)") { clinux_fallocate(fd, mode, Int64(offset), Int64(length)) }
            }
            return .ok
        }
    }

    func passLseek(fh: UInt64, offset: off_t, whence: Int32) throws -> Reply {
        let file = try requireFile(fh)
        return try file.lease.with { fd in
            let result = try systemCall("lseek", "file handle \(fh)") { lseek(fd, offset, whence) }
            return .lseek(Int64(result))
        }
    }

    func passCopyFileRange(fhIn: UInt64, offIn: off_t, fhOut: UInt64, offOut: off_t, length: Int, flags: UInt32) throws -> Reply {
        let source = try requireFile(fhIn)
        let target = try requireFile(fhOut)
        return try source.lease.with { inFD in
            try target.lease.with { outFD in
                var inOffset = Int64(offIn)
                var outOffset = Int64(offOut)
                let copied = try withUserShare(node: target.node, bytes: length, "file handle \(fhOut)", fd: outFD) {
                    try systemCall("copy_file_range", "file handles \(fhIn) -> \(fhOut)") {
                        clinux_copy_file_range(inFD, &inOffset, outFD, &outOffset, length, flags)
                    }
                }
                return .written(copied)
            }
        }
    }
}
