import CFuse
import Glibc

// One @convention(c) closure per operation: recover the filesystem from the request's userdata, copy
// what dies with the callback (names, fi fields), call the Swift method. Nothing else, and nothing that
// can trap: a trap here kills the daemon and leaves a dead mount.

/// The request's filesystem, with the request counted under `operation`.
private func filesystem(_ req: fuse_req_t?, _ operation: FuseOperation) -> (fuse_req_t, SandboxFileSystem)? {
    guard let req else { return nil }
    guard let userdata = fuse_req_userdata(req) else {
        fuse_reply_err(req, EIO)
        return nil
    }
    let fs = Unmanaged<SandboxFileSystem>.fromOpaque(userdata).takeUnretainedValue()
    fs.requestCounts.count(operation)
    return (req, fs)
}

private func name(_ req: fuse_req_t, _ pointer: UnsafePointer<CChar>?) -> RawName? {
    guard let pointer else {
        fuse_reply_err(req, EINVAL)
        return nil
    }
    return RawName(pointer)
}

func makeOperations() -> fuse_lowlevel_ops {
    var ops = fuse_lowlevel_ops()
    ops.`init` = { userdata, conn in
        guard let userdata, let conn else { return }
        Unmanaged<SandboxFileSystem>.fromOpaque(userdata).takeUnretainedValue().initConnection(conn)
    }
    ops.lookup = { req, parent, cName in
        guard let (req, fs) = filesystem(req, .lookup), let n = name(req, cName) else { return }
        fs.fuseLookup(req, parent, n)
    }
    ops.forget = { req, ino, count in
        guard let (req, fs) = filesystem(req, .forget) else { return }
        fs.fuseForget(req, ino, count)
    }
    ops.forget_multi = { req, count, forgets in
        guard let (req, fs) = filesystem(req, .batchForget) else { return }
        fs.fuseForgetMulti(req, UnsafeBufferPointer(start: forgets, count: forgets == nil ? 0 : count))
    }
    ops.getattr = { req, ino, fi in
        guard let (req, fs) = filesystem(req, .getattr) else { return }
        fs.fuseGetattr(req, ino, fh: fi?.pointee.fh)
    }
    ops.setattr = { req, ino, attr, toSet, fi in
        guard let (req, fs) = filesystem(req, .setattr) else { return }
        guard let attr else {
            fuse_reply_err(req, EINVAL)
            return
        }
        fs.fuseSetattr(req, ino, attr.pointee, toSet, fh: fi?.pointee.fh)
    }
    ops.readlink = { req, ino in
        guard let (req, fs) = filesystem(req, .readlink) else { return }
        fs.fuseReadlink(req, ino)
    }
    ops.mknod = { req, parent, cName, mode, rdev in
        guard let (req, fs) = filesystem(req, .mknod), let n = name(req, cName) else { return }
        fs.fuseMknod(req, parent, n, mode, rdev)
    }
    ops.mkdir = { req, parent, cName, mode in
        guard let (req, fs) = filesystem(req, .mkdir), let n = name(req, cName) else { return }
        fs.fuseMkdir(req, parent, n, mode)
    }
    ops.unlink = { req, parent, cName in
        guard let (req, fs) = filesystem(req, .unlink), let n = name(req, cName) else { return }
        fs.fuseUnlink(req, parent, n)
    }
    ops.rmdir = { req, parent, cName in
        guard let (req, fs) = filesystem(req, .rmdir), let n = name(req, cName) else { return }
        fs.fuseRmdir(req, parent, n)
    }
    ops.symlink = { req, cTarget, parent, cName in
        guard let (req, fs) = filesystem(req, .symlink), let target = name(req, cTarget), let n = name(req, cName) else { return }
        fs.fuseSymlink(req, target, parent, n)
    }
    ops.rename = { req, parent, cName, newParent, cNewName, flags in
        guard let (req, fs) = filesystem(req, .rename), let n = name(req, cName), let newName = name(req, cNewName) else { return }
        fs.fuseRename(req, parent, n, newParent, newName, flags)
    }
    ops.link = { req, ino, newParent, cNewName in
        guard let (req, fs) = filesystem(req, .link), let newName = name(req, cNewName) else { return }
        fs.fuseLink(req, ino, newParent, newName)
    }
    ops.open = { req, ino, fi in
        guard let (req, fs) = filesystem(req, .open) else { return }
        guard let fi else { fuse_reply_err(req, EINVAL); return }
        fs.fuseOpen(req, ino, fi)
    }
    ops.create = { req, parent, cName, mode, fi in
        guard let (req, fs) = filesystem(req, .create), let n = name(req, cName) else { return }
        guard let fi else { fuse_reply_err(req, EINVAL); return }
        fs.fuseCreate(req, parent, n, mode, fi)
    }
    // O_TMPFILE: only libfuse 3.17+ has the operation (without it the kernel answers EOPNOTSUPP).
    _ = cfuse_ops_set_tmpfile(&ops) { req, parent, mode, fi in
        guard let (req, fs) = filesystem(req, .tmpfile) else { return }
        guard let fi else { fuse_reply_err(req, EINVAL); return }
        fs.fuseTmpfile(req, parent, mode, fi)
    }
    ops.read = { req, _, size, offset, fi in
        guard let (req, fs) = filesystem(req, .read) else { return }
        guard let fh = fi?.pointee.fh else { fuse_reply_err(req, EBADF); return }
        fs.fuseRead(req, fh: fh, size: size, offset: offset)
    }
    ops.write_buf = { req, _, buffers, offset, fi in
        guard let (req, fs) = filesystem(req, .write) else { return }
        guard let fh = fi?.pointee.fh, let buffers else { fuse_reply_err(req, EBADF); return }
        fs.fuseWriteBuf(req, fh: fh, buffers: buffers, offset: offset)
    }
    // No flush: our fds are private and local filesystems report no close-time errors. libfuse answers the
    // first FLUSH with ENOSYS and the kernel sends no more, saving a round trip per close(2).
    ops.release = { req, _, fi in
        guard let (req, fs) = filesystem(req, .release) else { return }
        guard let fh = fi?.pointee.fh else { fuse_reply_err(req, 0); return }
        fs.fuseRelease(req, fh: fh)
    }
    ops.fsync = { req, _, datasync, fi in
        guard let (req, fs) = filesystem(req, .fsync) else { return }
        guard let fh = fi?.pointee.fh else { fuse_reply_err(req, EBADF); return }
        fs.fuseFsync(req, fh: fh, datasync: datasync != 0)
    }
    ops.opendir = { req, ino, fi in
        guard let (req, fs) = filesystem(req, .opendir) else { return }
        guard let fi else { fuse_reply_err(req, EINVAL); return }
        fs.fuseOpendir(req, ino, fi)
    }
    ops.readdir = { req, _, size, offset, fi in
        guard let (req, fs) = filesystem(req, .readdir) else { return }
        guard let fh = fi?.pointee.fh else { fuse_reply_err(req, EBADF); return }
        fs.fuseReaddir(req, fh: fh, size: size, offset: offset, plus: false)
    }
    ops.readdirplus = { req, _, size, offset, fi in
        guard let (req, fs) = filesystem(req, .readdirplus) else { return }
        guard let fh = fi?.pointee.fh else { fuse_reply_err(req, EBADF); return }
        fs.fuseReaddir(req, fh: fh, size: size, offset: offset, plus: true)
    }
    ops.releasedir = { req, _, fi in
        guard let (req, fs) = filesystem(req, .releasedir) else { return }
        guard let fh = fi?.pointee.fh else { fuse_reply_err(req, 0); return }
        fs.fuseRelease(req, fh: fh)
    }
    ops.fsyncdir = { req, _, datasync, fi in
        guard let (req, fs) = filesystem(req, .fsyncdir) else { return }
        guard let fh = fi?.pointee.fh else { fuse_reply_err(req, EBADF); return }
        fs.fuseFsyncdir(req, fh: fh, datasync: datasync != 0)
    }
    ops.statfs = { req, ino in
        guard let (req, fs) = filesystem(req, .statfs) else { return }
        fs.fuseStatfs(req, ino)
    }
    ops.setxattr = { req, ino, cName, value, size, flags in
        guard let (req, fs) = filesystem(req, .setxattr), let n = name(req, cName) else { return }
        let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
        fs.fuseSetxattr(req, ino, n, bytes, flags)
    }
    ops.getxattr = { req, ino, cName, size in
        guard let (req, fs) = filesystem(req, .getxattr), let n = name(req, cName) else { return }
        fs.fuseGetxattr(req, ino, n, size)
    }
    ops.listxattr = { req, ino, size in
        guard let (req, fs) = filesystem(req, .listxattr) else { return }
        fs.fuseListxattr(req, ino, size)
    }
    ops.removexattr = { req, ino, cName in
        guard let (req, fs) = filesystem(req, .removexattr), let n = name(req, cName) else { return }
        fs.fuseRemovexattr(req, ino, n)
    }
    ops.fallocate = { req, _, mode, offset, length, fi in
        guard let (req, fs) = filesystem(req, .fallocate) else { return }
        guard let fh = fi?.pointee.fh else { fuse_reply_err(req, EBADF); return }
        fs.fuseFallocate(req, fh: fh, mode: mode, offset: offset, length: length)
    }
    ops.lseek = { req, _, offset, whence, fi in
        guard let (req, fs) = filesystem(req, .lseek) else { return }
        guard let fh = fi?.pointee.fh else { fuse_reply_err(req, EBADF); return }
        fs.fuseLseek(req, fh: fh, offset: offset, whence: whence)
    }
    ops.copy_file_range = { req, _, offIn, fiIn, _, offOut, fiOut, length, flags in
        guard let (req, fs) = filesystem(req, .copyFileRange) else { return }
        guard let fhIn = fiIn?.pointee.fh, let fhOut = fiOut?.pointee.fh else { fuse_reply_err(req, EBADF); return }
        fs.fuseCopyFileRange(req, fhIn: fhIn, offIn: offIn, fhOut: fhOut, offOut: offOut, length: length,
                         flags: UInt32(bitPattern: flags))
    }
    return ops
}
