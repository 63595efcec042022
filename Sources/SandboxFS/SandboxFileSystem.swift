import CFuse
import CLinux
import DiskImage
import Glibc
import LinuxBlock
import Logging
import FATFS
import Sandbox
import Synchronization

/// The FUSE filesystem: `/IMAGE/sandboxes/NAME/...` with everything inside a sandbox passed through to the
/// sandbox's hidden mount.
///
/// Lock order: docs/ARCHITECTURE.md, "Locking".
// @unchecked: `session` and `mountpoint` are written only by mount(), before run() starts the workers or
// anything can call exit()/unmount(); every other stored property is a `let` of a Sendable type.
public final class SandboxFileSystem: @unchecked Sendable {
    let provider: any SandboxProvider
    let options: FileSystemOptions
    let logger: Logger
    let cache: HandleCache
    /// Nodes, attached sandboxes and partitions, open handles.
    let registry = Registry()
    /// Time the virtual directories report.
    let startTime: timespec
    /// Kernel notifications must not run on the request's own thread (they deadlock there).
    let notifier = NotificationQueue()
    var session: OpaquePointer?
    var mountpoint: String?
    let unmountOnce = Mutex(false)
    let hooks: TestHooks
    /// Passthrough backing ids by node (used only when `dataPath` is `.passthrough`).
    let backings: BackingFiles
    let negotiatedDataPath = Mutex(DataPath.unknown)
    let inodeNumbers = InodeNumbers()
    /// Nodes users other than root have open for writing: their writes are checked against root's share.
    let userWriters = UserWriters()
    let requestCounts = RequestCounts()
    /// A sandbox's mkdir and rmdir, answered off libfuse's request threads.
    let slowRequests = SlowRequests()

    /// The data path the kernel agreed to at INIT (`.unknown` before).
    public var dataPath: DataPath { negotiatedDataPath.withLock { $0 } }

    /// FUSE requests received per operation since the mount (kernel opcode names, zeros included).
    public var fuseRequestCounts: [String: UInt64] { requestCounts.snapshot }

    public convenience init(provider: any SandboxProvider, options: FileSystemOptions, logger: Logger) {
        self.init(provider: provider, options: options, logger: logger, hooks: TestHooks())
    }

    init(provider: any SandboxProvider, options: FileSystemOptions, logger: Logger, hooks: TestHooks) {
        self.hooks = hooks
        self.provider = provider
        self.options = options
        self.logger = logger
        cache = HandleCache(capacity: options.handleCacheCapacity)
        backings = BackingFiles(cachedReadLimit: options.cachedReadLimit)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        startTime = now
    }

    deinit {
        if let session { fuse_session_destroy(session) }
    }
}
