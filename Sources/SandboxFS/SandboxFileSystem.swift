import CFuse
import CLinux
import DiskImage
import Glibc
import LinuxBlock
import Logging
import FATFS
import Sandbox

/// The FUSE filesystem: `/IMAGE/sandboxes/NAME/...` with everything inside a sandbox passed through to the
/// sandbox's hidden mount.
///
/// Lock order (never reversed, never held across fuse_reply_* or provider calls):
///   DirHandle.lock -> SandboxFileSystem.state -> HandleCache state -> FdLease mutex; InodeNumbers is a leaf.
public final class SandboxFileSystem: @unchecked Sendable {
    let provider: any SandboxProvider
    let options: FileSystemOptions
    let logger: Logger
    let cache: HandleCache
    let state = Locked(FSState())
    /// Time the virtual directories report.
    let startTime: timespec
    /// Kernel notifications must not run on the request's own thread (they deadlock there).
    let notifier = NotificationQueue()
    var session: OpaquePointer?
    var mountpoint: String?
    var operations = makeOperations()
    let unmountOnce = Locked(false)
    let hooks: TestHooks
    /// Passthrough backing ids by node (used only when `dataPath` is `.passthrough`).
    let backings: BackingFiles
    let negotiatedDataPath = Locked(DataPath.unknown)
    let inodeNumbers = InodeNumbers()
    /// Nodes users other than root have open for writing: their writes are checked against root's share.
    let userWriters = UserWriters()
    let requestCounts = RequestCounts()

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

/// A sandbox the layer has attached: its mount fd and who uses it.
struct SandboxEntry {
    let ref: SandboxRef
    /// Directory fd of the hidden mount's root; every passthrough request holds it for its duration.
    var mount: FdLease
    let mountID: Int32
    /// File and directory handles opened through FUSE whose fds are not closed yet: lowered only after the
    /// fd is closed, so at 0 nothing of them pins the hidden mount. rmdir waits for 0, else answers EBUSY.
    var openHandles = 0
    /// Set while rmdir tears the sandbox down: new requests get ESTALE.
    var blocked = false
    /// The sandbox (root serial) a partition's entry belongs to; its own serial for a root. Open handles are
    /// counted on the owner, so rmdir of the sandbox sees those of its partitions.
    var owner: UInt64
    /// A root's partitions (their serials), parents first.
    var parts: [UInt64] = []
    /// pristine/: used since the last idle check (see Pristine.swift).
    var used = true
    /// Its teardown stopped part-way (the provider says so): requests get EIO until an rmdir finishes it.
    var broken = false
    /// A partition's: an O_PATH fd of its mount point directory in the tree that holds it (see
    /// AttachedParts.pins), closed with the partition.
    var pin: FdLease? = nil

    init(ref: SandboxRef, mount: FdLease, mountID: Int32, owner: UInt64? = nil) {
        self.ref = ref
        self.mount = mount
        self.mountID = mountID
        self.owner = owner ?? ref.serial
    }
}

/// A FAT partition of a sandbox or of pristine/, served from FATFS.
struct FatEntry {
    let volume: FATVolume
    /// Held by every request on the volume (fd -1: only a counter), so teardown waits for those in flight.
    let gate: FdLease
    let owner: UInt64
    let readOnly: Bool
    let label: String
    /// Owner and masks from the partition's fstab line (vfat's uid=, gid=, umask=, fmask=, dmask=).
    let ownership: FATMountOptions
    var blocked = false
    /// An O_PATH fd of its mount point directory (see AttachedParts.pins), closed with the partition.
    var pin: FdLease? = nil
}

/// An open file or directory (fi->fh indexes `FSState.handles`).
enum OpenHandle {
    case file(OpenFile)
    case directory(DirHandle)
    case virtualDirectory([VirtualEntry])
    /// A FAT file or directory: the partition's serial (its FatEntry) and the node; `writable` from the open flags.
    case fat(serial: UInt64, node: FATNodeID, writable: Bool)
}

final class OpenFile: @unchecked Sendable {
    let serial: UInt64
    /// The node ID the kernel opened.
    let node: UInt64
    /// st_ino as the caller sees it through FUSE (for the EBUSY log line: `find X -inum N` names it).
    let inode: UInt64
    let lease: FdLease
    /// The node whose I/O mode (BackingFiles) this open shares, released with it; nil without passthrough.
    let modeNode: UInt64?
    init(serial: UInt64, node: UInt64, inode: UInt64, lease: FdLease, modeNode: UInt64?) {
        self.serial = serial
        self.node = node
        self.inode = inode
        self.lease = lease
        self.modeNode = modeNode
    }
}

struct FSState {
    var table = NodeTable()
    var sandboxes: [UInt64: SandboxEntry] = [:]
    var handles: [UInt64: OpenHandle] = [:]
    var nextHandle: UInt64 = 1
    var fats: [UInt64: FatEntry] = [:]
    /// Mount point directories: (tree serial, dev, ino) of the directory -> the partition serial shown there.
    var covers: [InodeKey: UInt64] = [:]
    /// Pristine views by root serial -> image; their parts' serials -> root serial.
    var pristine: [UInt64: String] = [:]

    /// One more open handle in `serial`'s sandbox (counted on its owner); false when it is going away.
    mutating func addOpen(_ serial: UInt64) -> Bool {
        let owner = owner(of: serial)
        guard var root = sandboxes[owner], !root.blocked, sandboxes[serial]?.blocked != true,
              fats[serial]?.blocked != true else { return false }
        root.openHandles += 1
        sandboxes[owner] = root
        return true
    }

    mutating func dropOpen(_ serial: UInt64) {
        let owner = owner(of: serial)
        guard var root = sandboxes[owner] else { return }
        root.openHandles = max(root.openHandles - 1, 0)
        sandboxes[owner] = root
    }

    /// The sandbox a serial (a root's or a partition's) belongs to.
    func owner(of serial: UInt64) -> UInt64 {
        sandboxes[serial]?.owner ?? fats[serial]?.owner ?? serial
    }

    /// Node IDs answered for the roots of broken sandboxes: no node behind them, every request gets EIO.
    var brokenRoots: Set<UInt64> = []

    mutating func addHandle(_ handle: OpenHandle) -> UInt64 {
        let fh = nextHandle
        nextHandle &+= 1
        handles[fh] = handle
        return fh
    }
}
