import Glibc
import Sandbox

/// How the FUSE filesystem is mounted and served.
public struct FileSystemOptions: Sendable {
    /// Mount with allow_other so users other than the daemon's may enter (needs user_allow_other or root).
    public var allowOther = false
    /// The group whose members may enter the mount besides root (`serve --group`): the virtual directories
    /// above the sandboxes are 0750 root:group, or 0700 root:root without one. Inside a sandbox the image's
    /// own modes apply.
    public var accessGroup: gid_t? = nil
    /// Kernel mount flags asked for with mount -o (ro, noexec, noatime ...); nosuid,nodev stay whatever is asked.
    public var kernelFlags: [String] = []
    /// The fsname shown in /proc/mounts.
    public var fsName = InstanceNames.prefix
    /// Let libfuse move read/write payloads with splice(2) instead of copying through user memory (Tools/bench/run fuse:
    /// cold read 1.4x -> 1.05x the direct time, write+fsync 3.6x -> 2.8x).
    public var splice = true
    /// Worker threads (/dev/fuse; over io_uring libfuse has one per CPU). A sandbox's mkdir/rmdir holds none:
    /// it is answered from a thread of its own (SlowRequests).
    public var maxThreads: UInt32 = 32
    public var maxIdleThreads: UInt32 = 8
    /// Bound on cached O_PATH fds of passthrough inodes.
    public var handleCacheCapacity = 1024
    /// With passthrough, read-only opens of regular files smaller than this use FUSE's page cache (BackingFiles).
    public var cachedReadLimit = 1 << 20
    /// Entry/attr timeout of passthrough nodes: only this daemon changes the hidden mounts.
    public var passthroughTimeout: Double = 86_400
    /// Entry/attr timeout of the virtual tree, whose listings change under the daemon.
    public var virtualTimeout: Double = 1
    /// FUSE passthrough for open regular files when the kernel offers it (off with the writeback cache,
    /// which the kernel does not combine with it); otherwise `splice` decides the data path.
    public var passthrough = true
    /// How deep the backing files' filesystem stacks: 1 for overlayfs (the overlay engine), 0 for ext4.
    public var backingStackDepth: UInt32 = 1
    /// FUSE_HANDLE_KILLPRIV_V2: the daemon clears set-id bits on truncate, open(O_TRUNC) and chown (it
    /// does either way, Credentials.setIDBitsToDrop), so the kernel marks inodes S_NOSEC after one look at
    /// security.capability and stops asking before every write (a GETXATTR round trip each).
    public var handleKillpriv = true
    /// FUSE_CAP_READDIRPLUS_AUTO: the kernel chooses readdirplus only for a directory's first chunk or after
    /// lookups; off, every listing carries the entries' attributes (no LOOKUP per entry for find or du).
    public var readdirplusAuto = false
    /// FUSE over io_uring where libfuse (3.18 built with liburing: Tools/libfuse) and the kernel
    /// (CONFIG_FUSE_IO_URING) have it: serve turns the kernel's machine-wide `fuse.enable_uring` on when it is
    /// off and it is root; otherwise /dev/fuse. Each round trip costs less (docs/PERFORMANCE.md).
    public var ioUring = true
    /// Kernel writeback cache: write() returns once pages are dirty in the FUSE page cache (Tools/bench/run fuse knob).
    public var writebackCache = false
    /// How long (seconds) rmdir of a sandbox waits for the releases of handles in it before EBUSY: the kernel
    /// sends RELEASE after close(2) returns, queued behind reads in flight, so a just-closed file may still
    /// count as open. A file that really stays open makes rmdir fail only after this long.
    public var releaseWait: Double = 5

    public init() {}
}
