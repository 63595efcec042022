import CFuse
import CLinux
import Glibc
import LinuxBlock

/// One method per FUSE operation: picks the virtual tree or the passthrough and replies exactly once.
extension SandboxFileSystem {
    private func kind(_ id: UInt64) throws -> NodeKind {
        guard let kind = nodeKind(id) else {
            if registry.isBrokenRoot(id) {
                throw SystemError("resolve", "root of a broken sandbox (rmdir it)", errno: EIO)
            }
            throw SystemError("resolve", "unknown node \(id)", errno: ESTALE)
        }
        return kind
    }

    private var isPass: (NodeKind) -> Bool { { if case .pass = $0 { return true } else { return false } } }
    private var isFat: (NodeKind) -> Bool { { if case .fat = $0 { return true } else { return false } } }

    func fuseLookup(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName) {
        respond(req, "lookup") {
            let k = try kind(parent)
            if case .fat(let serial, let node) = k { return try fatLookup(serial, node, name) }
            // IMAGE/pristine's first lookup may wait for the image's preparation.
            if case .image = k, name.string == Self.pristineDirName {
                return respondElsewhere(req, "lookup") { [self] in try virtualLookup(k, name) }
            }
            guard isPass(k) else { return try virtualLookup(k, name) }
            do {
                let child = try withPass(parent) { try lookUpChild($0, name) }
                return .entry(id: child.id, attr: child.attr, attrTimeout: options.passthroughTimeout,
                              entryTimeout: options.passthroughTimeout)
            } catch let error as SystemError where error.errno == ENOENT {
                // Names appear only through this daemon, which invalidates this for the kernel.
                return .negativeEntry(timeout: options.passthroughTimeout)
            }
        }
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
        respond(req, "getattr") {
            let k = try kind(id)
            if case .fat(let serial, let node) = k { return try fatGetattr(serial, node) }
            guard isPass(k) else { return .attr(virtualAttr(id), timeout: options.virtualTimeout) }
            return try passGetattr(id, fh: fh)
        }
    }

    func fuseSetattr(_ req: fuse_req_t, _ id: UInt64, _ attr: stat, _ toSet: Int32, fh: UInt64?) {
        respond(req, "setattr") {
            let k = try kind(id)
            if case .fat(let serial, let node) = k { return try fatSetattr(serial, node, attr, toSet) }
            guard isPass(k) else { throw SystemError("setattr", "virtual directory", errno: EPERM) }
            return try passSetattr(id, attr, toSet, fh: fh, caller: Caller(req))
        }
    }

    func fuseReadlink(_ req: fuse_req_t, _ id: UInt64) {
        respond(req, "readlink") {
            guard isPass(try kind(id)) else { throw SystemError("readlink", "virtual directory", errno: EINVAL) }
            return try passReadlink(id)
        }
    }

    func fuseMknod(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName, _ mode: mode_t, _ rdev: dev_t) {
        respond(req, "mknod") {
            let k = try kind(parent)
            if isFat(k) { throw SystemError("mknod", "FAT holds regular files and directories only", errno: EPERM) }
            guard isPass(k) else { throw virtualRefusal("mknod", name) }
            return try passMknod(parent, name, mode: mode, rdev: rdev, caller: Caller(req))
        }
    }

    func fuseMkdir(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName, _ mode: mode_t) {
        respond(req, "mkdir") {
            switch try kind(parent) {
            case .pass: return try passMkdir(parent, name, mode: mode, caller: Caller(req))
            case .fat(let serial, let node): return try fatMkdir(serial, node, name, mode: mode)
            case .sandboxes(let image): return respondElsewhere(req, "mkdir") { [self] in try createSandbox(image: image, name: name) }
            default: throw virtualRefusal("mkdir", name)
            }
        }
    }

    func fuseUnlink(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName) {
        respond(req, "unlink") {
            let k = try kind(parent)
            if case .fat(let serial, let node) = k { return try fatUnlink(serial, node, name, directory: false) }
            guard isPass(k) else { throw virtualRefusal("unlink", name) }
            return try passUnlink(parent, name, directory: false)
        }
    }

    func fuseRmdir(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName) {
        respond(req, "rmdir") {
            switch try kind(parent) {
            case .pass: return try passUnlink(parent, name, directory: true)
            case .fat(let serial, let node): return try fatUnlink(serial, node, name, directory: true)
            case .sandboxes(let image): return respondElsewhere(req, "rmdir") { [self] in try destroySandbox(image: image, name: name) }
            default: throw virtualRefusal("rmdir", name)
            }
        }
    }

    func fuseSymlink(_ req: fuse_req_t, _ target: RawName, _ parent: UInt64, _ name: RawName) {
        respond(req, "symlink") {
            let k = try kind(parent)
            if isFat(k) { throw SystemError("symlink", "FAT has no symbolic links", errno: EPERM) }
            guard isPass(k) else { throw virtualRefusal("symlink", name) }
            return try passSymlink(parent, name, target: target, caller: Caller(req))
        }
    }

    func fuseRename(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName, _ newParent: UInt64, _ newName: RawName, _ flags: UInt32) {
        respond(req, "rename") {
            let (from, to) = (try kind(parent), try kind(newParent))
            if case .fat(let a, let p) = from, case .fat(let b, let q) = to, a == b {
                return try fatRename(a, p, name, q, newName, flags: flags)
            }
            if isFat(from) || isFat(to) { throw SystemError("rename", "across partitions", errno: EXDEV) }
            guard isPass(from), isPass(to) else { throw virtualRefusal("rename", name) }
            return try passRename(parent, name, newParent, newName, flags: flags)
        }
    }

    func fuseLink(_ req: fuse_req_t, _ id: UInt64, _ newParent: UInt64, _ newName: RawName) {
        respond(req, "link") {
            let (source, target) = (try kind(id), try kind(newParent))
            if isFat(source) || isFat(target) { throw SystemError("link", "FAT has no hard links", errno: isFat(source) && isFat(target) ? EPERM : EXDEV) }
            guard isPass(source), isPass(target) else { throw virtualRefusal("link", newName) }
            return try passLink(id, newParent: newParent, newName)
        }
    }

    func fuseOpen(_ req: fuse_req_t, _ id: UInt64, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        let flags = fi.pointee.flags
        respond(req, "open", fi: fi) {
            let k = try kind(id)
            if case .fat(let serial, let node) = k { return try fatOpen(serial, node, flags: flags, directory: false) }
            guard isPass(k) else { throw SystemError("open", "virtual directory", errno: EISDIR) }
            return try passOpen(req, id, flags: flags, caller: Caller(req))
        }
    }

    func fuseCreate(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName, _ mode: mode_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        let flags = fi.pointee.flags
        respond(req, "create", fi: fi) {
            let k = try kind(parent)
            if case .fat(let serial, let node) = k { return try fatCreate(serial, node, name, mode: mode, flags: flags) }
            guard isPass(k) else { throw virtualRefusal("create", name) }
            return try passCreate(req, parent, name, mode: mode, flags: flags, caller: Caller(req))
        }
    }

    func fuseTmpfile(_ req: fuse_req_t, _ parent: UInt64, _ mode: mode_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        let flags = fi.pointee.flags
        respond(req, "tmpfile", fi: fi) {
            guard isPass(try kind(parent)) else { throw SystemError("tmpfile", "virtual directory", errno: EOPNOTSUPP) }
            return try passTmpfile(req, parent, mode: mode, flags: flags, caller: Caller(req))
        }
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
        respond(req, "opendir", fi: fi) {
            let k = try kind(id)
            if case .fat(let serial, let node) = k { return try fatOpen(serial, node, flags: O_RDONLY, directory: true) }
            guard isPass(k) else { return try virtualOpendir(id, k) }
            return try passOpendir(id)
        }
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
        respond(req, "statfs") {
            let k = try kind(id)
            if case .fat(let serial, _) = k { return try fatStatfs(serial) }
            guard isPass(k) else { return .statfs(virtualStatfs()) }
            return try passStatfs(id)
        }
    }

    func fuseSetxattr(_ req: fuse_req_t, _ id: UInt64, _ name: RawName, _ value: [UInt8], _ flags: Int32) {
        respond(req, "setxattr") {
            let k = try kind(id)
            if isFat(k) { throw SystemError("setxattr", "FAT has no extended attributes", errno: EOPNOTSUPP) }
            guard isPass(k) else { throw SystemError("setxattr", "virtual directory", errno: EPERM) }
            return try passSetxattr(id, name, value: value, flags: flags)
        }
    }

    func fuseGetxattr(_ req: fuse_req_t, _ id: UInt64, _ name: RawName, _ size: Int) {
        respond(req, "getxattr") {
            let k = try kind(id)
            if isFat(k) { throw SystemError("getxattr", "FAT has no extended attributes", errno: ENODATA) }
            guard isPass(k) else { throw SystemError("getxattr", "virtual directory", errno: ENODATA) }
            return try passGetxattr(id, name, size: size)
        }
    }

    func fuseListxattr(_ req: fuse_req_t, _ id: UInt64, _ size: Int) {
        respond(req, "listxattr") {
            guard isPass(try kind(id)) else { return size == 0 ? .xattrSize(0) : .bytes([]) }  // FAT too: none
            return try passListxattr(id, size: size, caller: Caller(req))
        }
    }

    func fuseRemovexattr(_ req: fuse_req_t, _ id: UInt64, _ name: RawName) {
        respond(req, "removexattr") {
            let k = try kind(id)
            if isFat(k) { throw SystemError("removexattr", "FAT has no extended attributes", errno: EOPNOTSUPP) }
            guard isPass(k) else { throw SystemError("removexattr", "virtual directory", errno: EPERM) }
            return try passRemovexattr(id, name)
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
    private func virtualRefusal(_ op: String, _ name: RawName) -> SystemError {
        logger.notice("\(op) \(name.display) refused: the tree above the sandboxes is read-only")
        return SystemError(op, name.display, errno: EPERM)
    }
}
