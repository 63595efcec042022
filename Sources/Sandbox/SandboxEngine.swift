import DiskImage
import Glibc
import LinuxBlock

/// What an engine is asked to attach: one image, shared by all its sandboxes.
public struct ImageRequest: Sendable {
    public let name: String
    /// Resolved path of IMAGES_DIR/NAME.img.
    public let path: String
    /// Unique per serve process; used in kernel object names.
    public let serial: UInt64
    public let root: RootPartition
    public let settings: SandboxSettings

    public init(name: String, path: String, serial: UInt64, root: RootPartition, settings: SandboxSettings) {
        self.name = name
        self.path = path
        self.serial = serial
        self.root = root
        self.settings = settings
    }
}

public struct SandboxRequest: Sendable {
    public let image: String
    public let name: String
    public let serial: UInt64
    /// An existing empty directory (mode 0700 parent) where the sandbox's filesystem must be mounted.
    public let mountPath: String
    public let settings: SandboxSettings

    public init(image: String, name: String, serial: UInt64, mountPath: String, settings: SandboxSettings) {
        self.image = image
        self.name = name
        self.serial = serial
        self.mountPath = mountPath
        self.settings = settings
    }
}

/// The kernel objects an image or a sandbox holds. `teardown` releases them newest first.
public protocol EngineAttachment: AnyObject, Sendable {
    var teardown: Teardown { get }
    /// What the image's root already uses that the sandbox's mount does not count (overlayfs reports
    /// only its upper); zero where the mount counts it all (dm).
    var baseUse: BaseUse { get }
}

extension EngineAttachment {
    public var baseUse: BaseUse { BaseUse() }
}

public enum SandboxState: String, Sendable, Codable {
    case active
    case overflowed
    /// Its teardown stopped part-way: nothing is served from it, rmdir retries the rest.
    case broken
}

public struct SandboxUsage: Sendable, Equatable, Codable {
    public var state: SandboxState
    public var cowUsedBytes: UInt64
    public var cowTotalBytes: UInt64
    /// What cowTotalBytes may grow to (--cow-max); equal to it when the store cannot grow.
    public var cowMaxBytes: UInt64
    public var zramOriginalBytes: UInt64
    public var zramCompressedBytes: UInt64
    public var zramMemoryBytes: UInt64
    public var filesystemSizeBytes: UInt64
    public var filesystemFreeBytes: UInt64
    /// Where the COW store lives when it is not zram (e.g. "tmpfs"), for status.
    public var cowStore: String

    public init(state: SandboxState = .active, cowUsedBytes: UInt64 = 0, cowTotalBytes: UInt64 = 0,
                cowMaxBytes: UInt64? = nil, zramOriginalBytes: UInt64 = 0, zramCompressedBytes: UInt64 = 0, zramMemoryBytes: UInt64 = 0,
                filesystemSizeBytes: UInt64 = 0, filesystemFreeBytes: UInt64 = 0, cowStore: String = "zram") {
        self.state = state
        self.cowUsedBytes = cowUsedBytes
        self.cowTotalBytes = cowTotalBytes
        self.cowMaxBytes = cowMaxBytes ?? cowTotalBytes
        self.zramOriginalBytes = zramOriginalBytes
        self.zramCompressedBytes = zramCompressedBytes
        self.zramMemoryBytes = zramMemoryBytes
        self.filesystemSizeBytes = filesystemSizeBytes
        self.filesystemFreeBytes = filesystemFreeBytes
        self.cowStore = cowStore
    }
}

/// Turns an image into sandboxes. Engines are stateless between calls: everything a call makes is
/// recorded in the attachment it returns, so the manager owns lifetimes.
public protocol SandboxEngine: Sendable {
    /// "dm" or "overlay", as shown in status.
    var kind: String { get }
    /// Makes what every sandbox of the image shares. On failure releases what it made and throws.
    func attachImage(_ request: ImageRequest) throws -> any EngineAttachment
    /// Makes one sandbox and mounts it at `request.mountPath`. On failure releases what it made and throws.
    func createSandbox(_ request: SandboxRequest, on image: any EngineAttachment) throws -> any EngineAttachment
    /// Everything status shows.
    func usage(of sandbox: any EngineAttachment) -> SandboxUsage
    /// Only the COW store's used/total/max and state: what the watcher reads for every sandbox five times a
    /// second, so it skips zram memory stats and the mount's statvfs.
    func cowUsage(of sandbox: any EngineAttachment) -> SandboxUsage
    /// Called by the COW watcher with the latest usage: enlarges the sandbox's COW store when it is close
    /// to full and may still grow. Returns the new total in bytes, or nil when nothing changed.
    func growCowStore(of sandbox: any EngineAttachment, usage: SandboxUsage) throws -> UInt64?
    /// Where diff and save read the sandbox's changes; nil when the engine cannot tell. May mount what it
    /// needs (the image's root read-only) on first use, released with the image's attachment.
    func changeSource(of sandbox: any EngineAttachment, image: any EngineAttachment) throws -> ChangeSource?
    /// Mounts another subvolume of the btrfs `sandbox` (made on `image`) shows, at `mountPath`, sharing that
    /// sandbox's COW store (btrfs: several fstab mount points of one filesystem). Released by the returned
    /// attachment's teardown, which must run before `sandbox`'s.
    func mountSubvolume(_ subvolume: BtrfsSubvolume?, of sandbox: any EngineAttachment, image: any EngineAttachment,
                        at mountPath: String) throws -> any EngineAttachment
    /// True when the sandbox's filesystem keeps no change set: the FUSE layer journals its writes.
    var needsChangeJournal: Bool { get }
    /// The read-only loop devices the engine and the manager share (see ReadOnlyLoops).
    var readOnlyLoops: ReadOnlyLoops { get }
    /// A raw block store of `bytes` for a partition the daemon serves itself (FAT's block COW): an open
    /// read-write fd, released (closed, device freed) by `teardown`.
    func makeBlockStore(bytes: UInt64, teardown: Teardown) throws -> Int32
}

extension SandboxEngine {
    public func cowUsage(of sandbox: any EngineAttachment) -> SandboxUsage { usage(of: sandbox) }

    /// Engines whose COW store has a fixed size.
    public func growCowStore(of sandbox: any EngineAttachment, usage: SandboxUsage) throws -> UInt64? { nil }

    public func changeSource(of sandbox: any EngineAttachment, image: any EngineAttachment) throws -> ChangeSource? { nil }
    public func mountSubvolume(_ subvolume: BtrfsSubvolume?, of sandbox: any EngineAttachment, image: any EngineAttachment,
                               at mountPath: String) throws -> any EngineAttachment {
        throw SystemError("mount a btrfs subvolume", "\(kind) engine", errno: ENOTSUP)
    }
    public var needsChangeJournal: Bool { false }
    public var readOnlyLoops: ReadOnlyLoops { ReadOnlyLoops() }
    public func makeBlockStore(bytes: UInt64, teardown: Teardown) throws -> Int32 {
        throw SystemError("make block store", "\(kind) engine", errno: ENODEV)
    }

    /// Runs `build` with a fresh teardown stack; if it throws, unwinds what it pushed.
    func building<A>(_ teardown: Teardown, _ build: () throws -> A) throws -> A {
        do {
            return try build()
        } catch {
            teardown.runAll()
            throw error
        }
    }
}

/// A further subvolume of a btrfs that a sandbox (`owner`) already mounts: its mount, and what diff reads.
final class SubvolumeAttachment: EngineAttachment {
    let teardown: Teardown
    let owner: any EngineAttachment
    /// nil: the filesystem's default subvolume.
    let subvolume: BtrfsSubvolume?
    let mountPath: String
    /// The same subvolume as the image holds it (mounted read-only, released with the image).
    let pristineRoot: String
    /// overlay: its upper directory in the owner's store.
    let upperRoot: String?
    /// What a save freezes: the owner's writable filesystem (one superblock, frozen once).
    let writablePath: String
    var baseUse: BaseUse { owner.baseUse }

    init(teardown: Teardown, owner: any EngineAttachment, subvolume: BtrfsSubvolume?, mountPath: String, pristineRoot: String,
         upperRoot: String?, writablePath: String) {
        self.teardown = teardown
        self.owner = owner
        self.subvolume = subvolume
        self.mountPath = mountPath
        self.pristineRoot = pristineRoot
        self.upperRoot = upperRoot
        self.writablePath = writablePath
    }

    var changeSource: ChangeSource {
        ChangeSource(sandboxRoot: mountPath, pristineRoot: pristineRoot, upperRoot: upperRoot, writablePath: writablePath)
    }
}
