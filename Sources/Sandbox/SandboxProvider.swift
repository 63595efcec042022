import Glibc
import SandboxDiff

/// An error that knows the errno a FUSE caller should receive.
public protocol ErrnoCarrying: Error {
    var errno: Int32 { get }
}

/// Space and inodes the image's root uses below a sandbox whose mount does not report them.
public struct BaseUse: Sendable, Hashable {
    public var bytes: UInt64 = 0
    public var inodes: UInt64 = 0
    public init(bytes: UInt64 = 0, inodes: UInt64 = 0) {
        self.bytes = bytes
        self.inodes = inodes
    }

    /// The mount's statvfs as a user expects it of the sandbox: used = the image's use plus what the
    /// sandbox added, free = what the COW store can still take.
    public func adding(to st: statvfs) -> statvfs {
        var st = st
        let block = UInt64(max(st.f_frsize, 1))
        st.f_blocks += numericCast((bytes + block - 1) / block)
        st.f_files += numericCast(inodes)
        return st
    }
}

/// A live sandbox as the FUSE layer sees it: where its filesystem is mounted.
public struct SandboxRef: Sendable, Hashable {
    public let image: String
    public let name: String
    /// Unique for the life of the serve process; never reused, so a stale node can be told apart.
    public let serial: UInt64
    /// The hidden mount (outside the FUSE tree) that operations inside the sandbox pass through to.
    public let mountPath: String
    /// The other partitions of the image at their fstab mount points, parents first.
    public let partitions: [PartitionRef]
    /// `pristine/`: the image as it is, every write refused (EROFS).
    public let readOnly: Bool
    /// Its teardown stopped part-way (the mount may be gone): every access fails with EIO, rmdir retries.
    public var broken: Bool
    /// Added to the mount's statvfs for statfs (df) in the sandbox.
    public let baseUse: BaseUse
    /// Where the FUSE layer records what each write may change, for engines with no change set of their
    /// own (dm); nil where the engine keeps one (overlay's upper layer) and for pristine/.
    public let journal: ChangeJournal?

    public init(image: String, name: String, serial: UInt64, mountPath: String, partitions: [PartitionRef] = [],
                readOnly: Bool = false, broken: Bool = false, baseUse: BaseUse = BaseUse(), journal: ChangeJournal? = nil) {
        self.image = image
        self.name = name
        self.serial = serial
        self.mountPath = mountPath
        self.partitions = partitions
        self.readOnly = readOnly
        self.broken = broken
        self.baseUse = baseUse
        self.journal = journal
    }
}

/// What the FUSE layer needs from the sandbox manager. Implementations are thread-safe:
/// libfuse calls them from several worker threads at once.
public protocol SandboxProvider: AnyObject, Sendable {
    /// Names of the images currently offered (IMAGES_DIR/NAME.img, plus images that still hold sandboxes).
    func imageNames() -> [String]
    /// The image's live sandboxes, or nil when there is no such image.
    func sandboxNames(image: String) -> [String]?
    func sandbox(image: String, name: String) -> SandboxRef?
    /// Returns when the sandbox is ready. Throws an `ErrnoCarrying` error on failure, having released
    /// everything it made.
    func createSandbox(image: String, name: String) throws -> SandboxRef
    /// Discards the sandbox and every kernel object it used. The caller has already made sure no file
    /// in it is open and has closed its own descriptors inside `mountPath`.
    func destroySandbox(image: String, name: String) throws
    /// `IMAGE/pristine/`: attaches the read-only view if it is not (lazily: nothing is attached before this) and
    /// `mayAttach` (a root request); otherwise `SandboxError.rootOnly` (EACCES). Its serials stay the same
    /// across re-attaches, so the FUSE layer's nodes stay valid.
    func pristine(image: String, mayAttach: Bool) throws -> SandboxRef
    /// Releases what `pristine(image:)` attached; the FUSE layer calls it when nothing uses the view.
    func releasePristine(image: String)
}
