import CFuse
import CLinux
import Glibc
import LinuxBlock

/// One method per FUSE operation, replying exactly once: node operations ask the node's backend
/// (NodeBackend), handle operations the open handle.
extension SandboxFileSystem {
    func fuseLookup(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName) {
        respond(req, "lookup") { try backend(parent).lookup(req, name) }
    }

    func fuseForget(_ req: fuse_req_t, _ id: UInt64, _ count: UInt64) {
        forget(id, count)
        fuse_reply_none(req)
        returnMemoryIfSparse()
    }

    func fuseForgetMulti(_ req: fuse_req_t, _ items: UnsafeBufferPointer<fuse_forget_data>) {
        for item in items { forget(item.ino, item.nlookup) }
        fuse_reply_none(req)
        returnMemoryIfSparse()
    }

    /// After a big tree is forgotten, the freed node memory sits in malloc's (per-thread) arenas: trim them.
    private func returnMemoryIfSparse() {
        if registry.shrinkIfSparse() { malloc_trim(0) }
    }

    func fuseGetattr(_ req: fuse_req_t, _ id: UInt64, fh: UInt64?) {
        respond(req, "getattr") { try backend(id).getattr(fh: fh) }
    }

    func fuseSetattr(_ req: fuse_req_t, _ id: UInt64, _ attr: stat, _ toSet: Int32, fh: UInt64?) {
        respond(req, "setattr") {
            try journaled(.setattr, .node(id)) { try backend(id).setattr(req, attr, toSet, fh: fh) }
        }
    }

    func fuseReadlink(_ req: fuse_req_t, _ id: UInt64) {
        respond(req, "readlink") { try backend(id).readlink() }
    }

    func fuseMknod(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName, _ mode: mode_t, _ rdev: dev_t) {
        respond(req, "mknod") {
            try journaled(.mknod, .entry(parent: parent, name: name)) { try backend(parent).mknod(req, name, mode: mode, rdev: rdev) }
        }
    }

    func fuseMkdir(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName, _ mode: mode_t) {
        respond(req, "mkdir") {
            try journaled(.mkdir, .entry(parent: parent, name: name)) { try backend(parent).mkdir(req, name, mode: mode) }
        }
    }

    func fuseUnlink(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName) {
        respond(req, "unlink") {
            try journaled(.unlink, .entry(parent: parent, name: name)) { try backend(parent).unlink(name) }
        }
    }

    func fuseRmdir(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName) {
        respond(req, "rmdir") {
            try journaled(.rmdir, .entry(parent: parent, name: name)) { try backend(parent).rmdir(req, name) }
        }
    }

    func fuseSymlink(_ req: fuse_req_t, _ target: RawName, _ parent: UInt64, _ name: RawName) {
        respond(req, "symlink") {
            try journaled(.symlink, .entry(parent: parent, name: name)) { try backend(parent).symlink(req, name, target: target) }
        }
    }

    func fuseRename(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName, _ newParent: UInt64, _ newName: RawName, _ flags: UInt32) {
        respond(req, "rename") {
            let (from, to) = (try backend(parent), try backend(newParent))
            return try journaled(.rename, .move(parent: parent, name: name, newParent: newParent, newName: newName)) {
                try from.rename(name, to: to, newName, flags: flags)
            }
        }
    }

    func fuseLink(_ req: fuse_req_t, _ id: UInt64, _ newParent: UInt64, _ newName: RawName) {
        respond(req, "link") {
            let (source, target) = (try backend(id), try backend(newParent))
            return try journaled(.link, .newName(node: id, parent: newParent, name: newName)) {
                try source.link(into: target, newName)
            }
        }
    }

    func fuseOpen(_ req: fuse_req_t, _ id: UInt64, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        let flags = fi.pointee.flags
        respond(req, "open", fi: fi) {
            try journaled(.open, .open(node: id, flags: flags)) { try backend(id).open(req, flags: flags) }
        }
    }

    func fuseCreate(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName, _ mode: mode_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        let flags = fi.pointee.flags
        respond(req, "create", fi: fi) {
            try journaled(.create, .entry(parent: parent, name: name)) { try backend(parent).create(req, name, mode: mode, flags: flags) }
        }
    }

    func fuseTmpfile(_ req: fuse_req_t, _ parent: UInt64, _ mode: mode_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        let flags = fi.pointee.flags
        respond(req, "tmpfile", fi: fi) { try backend(parent).tmpfile(req, mode: mode, flags: flags) }
    }

    func fuseRead(_ req: fuse_req_t, fh: UInt64, size: Int, offset: off_t) {
        if let h = fatHandle(fh) { return fatRead(req, h, size: size, offset: offset) }
        passRead(req, fh: fh, size: size, offset: offset)
    }

    func fuseWriteBuf(_ req: fuse_req_t, fh: UInt64, buffers: UnsafeMutablePointer<fuse_bufvec>, offset: off_t) {
        respond(req, "write") {
            if let h = fatHandle(fh) { return try fatWrite(h, buffers: buffers, offset: offset) }
            return try passWrite(fh: fh, buffers: buffers, offset: offset)
        }
    }

    func fuseRelease(_ req: fuse_req_t, fh: UInt64) {
        release(fh: fh)
        fuse_reply_err(req, 0)
    }

    func fuseFsync(_ req: fuse_req_t, fh: UInt64, datasync: Bool) {
        respond(req, "fsync") {
            if let h = fatHandle(fh) { return try fatFsync(h.serial) }
            return try passFsync(fh: fh, datasync: datasync)
        }
    }

    func fuseOpendir(_ req: fuse_req_t, _ id: UInt64, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        respond(req, "opendir", fi: fi) { try backend(id).opendir() }
    }

    func fuseReaddir(_ req: fuse_req_t, fh: UInt64, size: Int, offset: off_t, plus: Bool) {
        respond(req, "readdir") { try readdirReply(req, fh: fh, size: size, offset: offset, plus: plus) }
    }

    func fuseFsyncdir(_ req: fuse_req_t, fh: UInt64, datasync: Bool) {
        respond(req, "fsyncdir") {
            if let h = fatHandle(fh) { return try fatFsync(h.serial) }
            return try fsyncdir(fh: fh, datasync: datasync)
        }
    }

    func fuseStatfs(_ req: fuse_req_t, _ id: UInt64) {
        respond(req, "statfs") { try backend(id).statfs() }
    }

    func fuseSetxattr(_ req: fuse_req_t, _ id: UInt64, _ name: RawName, _ value: [UInt8], _ flags: Int32) {
        respond(req, "setxattr") {
            try journaled(.setxattr, .node(id)) { try backend(id).setxattr(name, value: value, flags: flags) }
        }
    }

    func fuseGetxattr(_ req: fuse_req_t, _ id: UInt64, _ name: RawName, _ size: Int) {
        respond(req, "getxattr") { try backend(id).getxattr(name, size: size) }
    }

    func fuseListxattr(_ req: fuse_req_t, _ id: UInt64, _ size: Int) {
        respond(req, "listxattr") { try backend(id).listxattr(req, size: size) }
    }

    func fuseRemovexattr(_ req: fuse_req_t, _ id: UInt64, _ name: RawName) {
        respond(req, "removexattr") {
            try journaled(.removexattr, .node(id)) { try backend(id).removexattr(name) }
        }
    }

    func fuseFallocate(_ req: fuse_req_t, fh: UInt64, mode: Int32, offset: off_t, length: off_t) {
        respond(req, "fallocate") {
            if fatHandle(fh) != nil { throw SystemError("fallocate", "FAT file", errno: EOPNOTSUPP) }
            return try passFallocate(fh: fh, mode: mode, offset: offset, length: length) }
    }

    func fuseLseek(_ req: fuse_req_t, fh: UInt64, offset: off_t, whence: Int32) {
        respond(req, "lseek") {
            if let h = fatHandle(fh) { return try fatLseek(h.serial, h.node, offset: offset, whence: whence) }
            return try passLseek(fh: fh, offset: offset, whence: whence)
        }
    }

    func fuseCopyFileRange(_ req: fuse_req_t, fhIn: UInt64, offIn: off_t, fhOut: UInt64, offOut: off_t, length: Int, flags: UInt32) {
        respond(req, "copy_file_range") {
            // FAT files are not kernel files: the caller falls back to read and write.
            if fatHandle(fhIn) != nil || fatHandle(fhOut) != nil { throw SystemError("copy_file_range", "FAT file", errno: EXDEV) }
            return try passCopyFileRange(fhIn: fhIn, offIn: offIn, fhOut: fhOut, offOut: offOut, length: length, flags: flags)
        }
    }

    /// EPERM for anything but mkdir/rmdir in `sandboxes/`; logged once per refusal.
    func virtualRefusal(_ op: String, _ name: RawName) -> SystemError {
        logger.notice("\(op) \(name.display) refused: the tree above the sandboxes is read-only")
        return SystemError(op, name.display, errno: EPERM)
    }
}
