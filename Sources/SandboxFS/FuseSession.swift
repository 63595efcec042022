import CFuse
import Dispatch
import Glibc
import LinuxBlock
import Logging
import Sandbox

/// Runs kernel notifications (inval_entry) off the request threads: called inside a request they deadlock.
final class NotificationQueue: Sendable {
    private let queue = DispatchQueue(label: "imgsandbox.fuse-notify")
    func async(_ work: @escaping @Sendable () -> Void) { queue.async(execute: work) }
}

extension SandboxFileSystem {
    /// Creates the session and mounts it: nosuid, nodev, default_permissions (+ allow_other).
    /// Sets the process umask to 0: the kernel already applied the caller's umask to every mode it sends.
    public func mount(at mountpoint: String) throws {
        precondition(session == nil, "mount called twice")
        umask(0)
        var mountOptions = "nosuid,nodev,default_permissions,fsname=\(options.fsName),subtype=\(InstanceNames.fuseSubtype)"
        if options.allowOther { mountOptions += ",allow_other" }
        for flag in options.kernelFlags { mountOptions += ",\(flag)" }
        if options.ioUring, enableKernelUring() { mountOptions += ",io_uring" }
        let args = [InstanceNames.fuseSubtype, "-o", mountOptions]
        let cArgs = args.map { strdup($0) }
        defer { cArgs.forEach { free($0) } }
        let userdata = Unmanaged.passUnretained(self).toOpaque()
        var operations = makeOperations()   // libfuse copies it
        let se: OpaquePointer? = cArgs.map { UnsafePointer($0) }.withUnsafeBufferPointer { argv in
            withUnsafePointer(to: &operations) { ops in
                cfuse_session_new(Int32(argv.count), argv.baseAddress, ops, userdata)
            }
        }
        guard let se else {
            throw SystemError("fuse_session_new", mountpoint, errno: EINVAL)
        }
        guard fuse_session_mount(se, mountpoint) == 0 else {
            let saved = errno
            fuse_session_destroy(se)
            throw SystemError("fuse_session_mount", mountpoint, errno: saved == 0 ? EIO : saved)
        }
        session = se
        self.mountpoint = mountpoint
        logger.info("mounted", metadata: ["mountpoint": "\(mountpoint)"])
    }

    /// Serves requests on a multi-threaded loop (one cloned /dev/fuse fd per worker) until `exit()` or
    /// an unmount, then waits for the sandbox mkdirs/rmdirs still running (SlowRequests). Returns libfuse's
    /// result (0, -errno or a signal number).
    public func run() -> Int32 {
        guard let session else { return -EINVAL }
        return withExtendedLifetime(self) {
            let result = cfuse_session_loop_mt(session, 1, options.maxIdleThreads, options.maxThreads)
            slowRequests.end() // the loop also ends when the kernel ends the connection
            slowRequests.waitUntilIdle()
            return result
        }
    }

    /// Ends `run()`, after the sandbox mkdirs/rmdirs in progress have been answered (SlowRequests; serve
    /// cancels preparations first): a caller left without its answer would keep the mount busy, so the
    /// unmount could not end the connection. Not async-signal-safe: call it from a normal thread, e.g. a
    /// DispatchSource for SIGTERM/SIGINT in the executable (this layer installs no signal handlers).
    public func exit() {
        guard let session else { return }
        slowRequests.finish()
        fuse_session_exit(session)
        // 3.18's fuse_session_exit wakes the loop itself. Older ones only set a flag the loop checks after
        // its next request, which a statfs of the mountpoint from a helper thread delivers.
        guard !Self.libfuseHasUring, let mountpoint else { return }
        DispatchQueue.global().async {
            var buf = statvfs()
            _ = statvfs(mountpoint, &buf)
        }
    }

    /// Detaches the mount (idempotent). Open files keep the connection until closed (lazy unmount).
    public func unmount() {
        let first = unmountOnce.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        guard first, let session else { return }
        fuse_session_unmount(session)
        logger.info("unmounted", metadata: ["mountpoint": "\(mountpoint ?? "")"])
    }

    /// The init callback: capabilities and buffer sizes.
    func initConnection(_ conn: UnsafeMutablePointer<fuse_conn_info>) {
        // The FUSE_CAP_ macros are int in 3.17's headers and unsigned long in 3.18's.
        func want(_ flag: some BinaryInteger) {
            let bit = UInt32(truncatingIfNeeded: flag)
            if conn.pointee.capable & bit != 0 { conn.pointee.want |= bit }
        }
        want(FUSE_CAP_ASYNC_READ)
        want(FUSE_CAP_PARALLEL_DIROPS)
        want(FUSE_CAP_READDIRPLUS)
        // Without _AUTO every listing is readdirplus. With it (libfuse's default) only a directory's first
        // chunk is, unless lookups came between: find, du and fts read a whole directory before they stat
        // it, so each later entry cost a LOOKUP.
        if options.readdirplusAuto {
            want(FUSE_CAP_READDIRPLUS_AUTO)
        } else {
            conn.pointee.want &= ~UInt32(truncatingIfNeeded: FUSE_CAP_READDIRPLUS_AUTO)
        }
        want(FUSE_CAP_ATOMIC_O_TRUNC)
        want(FUSE_CAP_CACHE_SYMLINKS)
        // POSIX ACLs as a local filesystem has them: the kernel enforces them (default_permissions) and
        // leaves the umask to the daemon (DONT_MASK), which a parent's default ACL replaces.
        want(FUSE_CAP_POSIX_ACL)
        want(FUSE_CAP_DONT_MASK)
        // The kernel then sets SB_NOSEC: an inode whose set-id bits and security.capability were found clear
        // is marked S_NOSEC until its attributes are next refreshed, and writes stop asking for the
        // capability (one GETXATTR per write(2) otherwise). Writes still clear what they must: the kernel's
        // file_remove_privs sends the mode change and removes the capability while the inode is not S_NOSEC;
        // truncate, open(O_TRUNC) and chown are cleared here (passSetattr, passOpen).
        if options.handleKillpriv { want(FUSE_CAP_HANDLE_KILLPRIV_V2) }
        if options.splice {
            want(FUSE_CAP_SPLICE_WRITE)
            want(FUSE_CAP_SPLICE_MOVE)
            want(FUSE_CAP_SPLICE_READ)
        } else {
            let off = UInt32(truncatingIfNeeded: FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ)
            conn.pointee.want &= ~off
        }
        // No writeback cache by default: writes reach the hidden mount before write() returns.
        if options.writebackCache {
            want(FUSE_CAP_WRITEBACK_CACHE)
        } else {
            conn.pointee.want &= ~UInt32(truncatingIfNeeded: FUSE_CAP_WRITEBACK_CACHE)
        }
        // Passthrough: the kernel does not combine it with the writeback cache.
        let passthrough = options.passthrough && !options.writebackCache
            && cfuse_conn_want_passthrough(conn, options.backingStackDepth) != 0
        let path: DataPath = passthrough ? .passthrough : options.splice ? .splice : .copy
        negotiatedDataPath.withLock { $0 = path }
        logger.info("data path \(path.rawValue)\(passthrough ? "" : Self.noPassthroughReason(conn, options))")
        // 1 MiB requests; libfuse derives max_pages from max_write when the kernel supports it.
        conn.pointee.max_write = 1 << 20
        logger.debug("fuse init", metadata: [
            "proto": "\(conn.pointee.proto_major).\(conn.pointee.proto_minor)",
            "want": "\(String(conn.pointee.want, radix: 16))",
            "max_write": "\(conn.pointee.max_write)",
        ])
    }

    private static func noPassthroughReason(_ conn: UnsafeMutablePointer<fuse_conn_info>, _ options: FileSystemOptions) -> String {
        if cfuse_passthrough_api() == 0 { return " (this libfuse has no passthrough API; 3.17 has)" }
        if !options.passthrough { return " (passthrough turned off)" }
        if options.writebackCache { return " (passthrough does not combine with the writeback cache)" }
        return " (the kernel offers no FUSE passthrough; it came with 6.9)"
    }

    /// This libfuse is 3.18+ (its io_uring works only when built with liburing, as Tools/libfuse builds it).
    static let libfuseHasUring = cfuse_uring_api() != 0

    /// Whether serve can ask for FUSE over io_uring: this libfuse has it and the kernel's `fuse.enable_uring`
    /// is on, or was off and is turned on here (root only). One log line says what was chosen and why (libfuse
    /// logs it if its ring setup then fails and it falls back to /dev/fuse).
    /// The parameter is machine-wide and stays on at exit: the kernel checks it at every ring command, so
    /// turning it off would break another daemon's (or another serve's) running io_uring mount, and while on
    /// it changes nothing for daemons that do not ask for io_uring.
    private func enableKernelUring() -> Bool {
        guard Self.libfuseHasUring else {
            logger.info("io_uring: not used (this libfuse has none; Tools/libfuse builds 3.18 with liburing): /dev/fuse")
            return false
        }
        let parameter = "/sys/module/fuse/parameters/enable_uring"
        let fd = open(parameter, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            logger.info("io_uring: not used (the kernel has no \(parameter): CONFIG_FUSE_IO_URING, 6.14+): /dev/fuse")
            return false
        }
        var current: UInt8 = 0
        let got = read(fd, &current, 1)
        close(fd)
        guard got == 1 else {
            logger.info("io_uring: not used (cannot read \(parameter)): /dev/fuse")
            return false
        }
        if current == UInt8(ascii: "Y") {
            logger.info("io_uring: asked for (the kernel's fuse.enable_uring is on)")
            return true
        }
        let writable = open(parameter, O_WRONLY | O_CLOEXEC)
        var on = UInt8(ascii: "Y")
        guard writable >= 0, write(writable, &on, 1) == 1 else {
            let reason = String(cString: strerror(errno))
            if writable >= 0 { close(writable) }
            logger.info("io_uring: not used (the kernel's fuse.enable_uring is off and cannot be turned on: \(reason)): /dev/fuse")
            return false
        }
        close(writable)
        logger.notice("io_uring: asked for (turned on the kernel's fuse.enable_uring, machine-wide; it stays on)")
        return true
    }

    /// Asks the kernel to drop a cached dentry; always from the notification thread.
    func invalidateEntry(parent: UInt64, name: String) {
        notifier.async { [self] in
            guard let session else { return }
            let rc = name.withCString { fuse_lowlevel_notify_inval_entry(session, parent, $0, strlen($0)) }
            if rc != 0 && rc != -ENOENT {
                logger.debug("inval_entry failed", metadata: ["name": "\(name)", "rc": "\(rc)"])
            }
        }
    }
}
