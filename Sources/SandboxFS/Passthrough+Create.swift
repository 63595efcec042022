import CFuse
import CLinux
import Glibc
import LinuxBlock

/// Operations that add, remove or move names inside a sandbox.
extension SandboxFileSystem {
    private func checkName(_ name: RawName, _ op: String) throws {
        guard name.isPlainComponent else { throw SystemError(op, "name \(name.display)", errno: name.componentErrno) }
    }

    /// The mode to create with. The kernel sends modes without the caller's umask (FUSE_CAP_DONT_MASK, so
    /// that a default ACL can apply): apply it unless the parent has a default ACL, which replaces the
    /// umask (what the kernel's posix_acl_create does for a local filesystem).
    private func createMode(_ mode: mode_t, _ caller: Caller, parentFD: Int32) -> mode_t {
        guard caller.umask != 0 else { return mode }
        let hasDefaultACL = clinux_getxattr(PassContext.procPath(parentFD), "system.posix_acl_default", nil, 0) > 0
        return hasDefaultACL ? mode : mode & ~caller.umask
    }

    /// Creates something under `parent` as the caller with `mode` (umask applied), then looks the new name up.
    private func make(_ parent: UInt64, _ name: RawName, _ caller: Caller, _ op: String, mode: mode_t,
                      _ call: (Int32, UnsafePointer<CChar>, mode_t) -> Int32) throws -> Reply {
        try checkName(name, op)
        return try withPass(parent) { ctx in
            try ctx.withPathFD { parentFD in
                let object = "\(ctx.object)/\(name.display)"
                try requireUserShare(fd: parentFD, object)
                let mode = createMode(mode, caller, parentFD: parentFD)
                try caller.asFilesystemIdentity { try systemCall(op, object) { name.withCString { call(parentFD, $0, mode) } } }
            }
            let child = try lookUpChild(ctx, name)
            return .entry(id: child.id, attr: child.attr, attrTimeout: options.passthroughTimeout,
                          entryTimeout: options.passthroughTimeout)
        }
    }

    func passMknod(_ parent: UInt64, _ name: RawName, mode: mode_t, rdev: dev_t, caller: Caller) throws -> Reply {
        let type = mode & UInt32(SwiftGlibc.S_IFMT)
        // The daemon keeps CAP_MKNOD under any fsuid: only root may make device nodes.
        if (type == UInt32(SwiftGlibc.S_IFCHR) || type == UInt32(SwiftGlibc.S_IFBLK)) && caller.uid != 0 {
            throw SystemError("mknod", "device node \(name.display) for uid \(caller.uid)", errno: EPERM)
        }
        return try make(parent, name, caller, "mknod", mode: mode) { mknodat($0, $1, $2, rdev) }
    }

    func passMkdir(_ parent: UInt64, _ name: RawName, mode: mode_t, caller: Caller) throws -> Reply {
        try make(parent, name, caller, "mkdir", mode: mode) { mkdirat($0, $1, $2) }
    }

    func passSymlink(_ parent: UInt64, _ name: RawName, target: RawName, caller: Caller) throws -> Reply {
        try make(parent, name, caller, "symlink", mode: 0) { parentFD, cName, _ in
            target.withCString { symlinkat($0, parentFD, cName) }
        }
    }

    func passLink(_ id: UInt64, newParent: UInt64, _ name: RawName) throws -> Reply {
        try checkName(name, "link")
        return try withPass(id) { source in
            try withPass(newParent) { parent in
                guard source.node.serial == parent.node.serial else {
                    throw SystemError("link", "across sandboxes", errno: EXDEV)
                }
                // linkat(fd, "", AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH: done as the daemon, not the caller
                // (a link creates no inode, so ownership does not matter).
                try source.withPathFD { sourceFD in
                    try requireUserShare(fd: sourceFD, "\(parent.object)/\(name.display)")
                    try parent.withPathFD { parentFD in
                        try systemCall("link", "\(parent.object)/\(name.display)") {
                            name.withCString { linkat(sourceFD, "", parentFD, $0, clinux_AT_EMPTY_PATH) }
                        }
                    }
                }
                let child = try lookUpChild(parent, name)
                return .entry(id: child.id, attr: child.attr, attrTimeout: options.passthroughTimeout,
                              entryTimeout: options.passthroughTimeout)
            }
        }
    }

    func passUnlink(_ parent: UInt64, _ name: RawName, directory: Bool) throws -> Reply {
        try checkName(name, directory ? "rmdir" : "unlink")
        return try withPass(parent) { ctx in
            try ctx.withPathFD { parentFD in
                if directory { try checkNotMountPoint(ctx, parentFD: parentFD, name, "rmdir") }
                try systemCall(directory ? "rmdir" : "unlink", "\(ctx.object)/\(name.display)") {
                    name.withCString { unlinkat(parentFD, $0, directory ? AT_REMOVEDIR : 0) }
                }
            }
            return .ok
        }
    }

    func passRename(_ parent: UInt64, _ name: RawName, _ newParent: UInt64, _ newName: RawName, flags: UInt32) throws -> Reply {
        try checkName(name, "rename")
        try checkName(newName, "rename")
        let known = clinux_RENAME_NOREPLACE | clinux_RENAME_EXCHANGE
        guard flags & ~known == 0 else { throw SystemError("rename", "flags \(flags)", errno: EINVAL) }
        return try withPass(parent) { from in
            try withPass(newParent) { to in
                guard from.node.serial == to.node.serial else { throw SystemError("rename", "across sandboxes", errno: EXDEV) }
                try from.withPathFD { fromFD in
                    try checkNotMountPoint(from, parentFD: fromFD, name, "rename")
                    try to.withPathFD { toFD in
                        try checkNotMountPoint(to, parentFD: toFD, newName, "rename")
                        try systemCall("rename", "\(from.object)/\(name.display) -> \(to.object)/\(newName.display)") {
                            name.withCString { old in
                                newName.withCString { new in clinux_renameat2(fromFD, old, toFD, new, flags) }
                            }
                        }
                    }
                }
                return .ok
            }
        }
    }

    func passCreate(_ req: fuse_req_t, _ parent: UInt64, _ name: RawName, mode: mode_t, flags: Int32, caller: Caller) throws -> Reply {
        try checkName(name, "create")
        return try withPass(parent) { ctx in
            let fd = FileDescriptor(adopting: try ctx.withPathFD { parentFD in
                try requireUserShare(fd: parentFD, "\(ctx.object)/\(name.display)")
                let mode = createMode(mode, caller, parentFD: parentFD)
                return try caller.asFilesystemIdentity {
                    try systemCall("create", "\(ctx.object)/\(name.display)") {
                        name.withCString {
                            openat(parentFD, $0, (hiddenOpenFlags(flags) | O_CREAT | O_NOFOLLOW | O_CLOEXEC) & ~O_NOCTTY, mode)
                        }
                    }
                }
            })
            return try replyCreated(req, fd: fd, flags: flags, serial: ctx.node.serial, mountID: ctx.mountID)
        }
    }

    /// O_TMPFILE: an unnamed file in `parent` (FUSE_TMPFILE, libfuse 3.17+), open and registered as a node
    /// so that linkat(2) can give it a name later (unless O_EXCL, which the hidden mount enforces).
    func passTmpfile(_ req: fuse_req_t, _ parent: UInt64, mode: mode_t, flags: Int32, caller: Caller) throws -> Reply {
        try withPass(parent) { ctx in
            let fd = FileDescriptor(adopting: try ctx.withPathFD { parentFD in
                try requireUserShare(fd: parentFD, ctx.object)
                let mode = createMode(mode, caller, parentFD: parentFD)
                let open = (hiddenOpenFlags(flags) & ~(O_CREAT | O_NOCTTY | O_TRUNC | O_DIRECTORY)) | clinux_O_TMPFILE | O_CLOEXEC
                return try caller.asFilesystemIdentity {
                    try systemCall("tmpfile", ctx.object) { openat(parentFD, ".", open, mode) }
                }
            })
            return try replyCreated(req, fd: fd, flags: flags, serial: ctx.node.serial, mountID: ctx.mountID)
        }
    }

    /// The answer to create and tmpfile: `fd` registered as a node and opened as a file handle; whatever
    /// fails is undone.
    private func replyCreated(_ req: fuse_req_t, fd: consuming FileDescriptor, flags: Int32, serial: UInt64,
                              mountID: Int32) throws -> Reply {
        let child = try register(fd: fd.raw, serial: serial, mountID: mountID)
        do {
            let file = try addOpenFile(req, fd: fd, flags: flags, serial: serial, node: child.id, inode: UInt64(child.attr.st_ino))
            return .created(id: child.id, attr: child.attr, timeout: options.passthroughTimeout, fh: file.fh,
                            backingID: file.backingID)
        } catch {
            forget(child.id, 1)
            throw error
        }
    }
}
