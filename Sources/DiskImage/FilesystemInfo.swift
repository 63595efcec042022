public enum FilesystemType: String, Sendable {
    case ext2, ext3, ext4, vfat, xfs, btrfs, squashfs, erofs, swap

    /// squashfs and erofs take no writes: a sandbox of one is an overlay on it, and save makes it anew.
    public var isReadOnly: Bool { self == .squashfs || self == .erofs }
}

/// What a filesystem's superblock says about itself.
public struct FilesystemInfo: Sendable, Equatable {
    public let type: FilesystemType
    /// The filesystem block size (vfat: bytes per sector, as blkid reports it; swap: page size).
    public let blockSize: Int
    /// The size the filesystem says it has (may differ from its partition's size).
    public let sizeBytes: UInt64
    public let label: String?
    public let uuid: String?
    /// The smallest unit the filesystem reads and writes its device in (xfs: its sector size; others:
    /// the block size). A device whose logical sectors are larger cannot carry it.
    public let ioUnit: Int

    /// A filesystem a Linux root can live on: ext2/3/4, xfs, btrfs.
    public var isLinuxRoot: Bool {
        switch type {
        case .ext2, .ext3, .ext4, .xfs, .btrfs: return true
        case .vfat, .squashfs, .erofs, .swap: return false
        }
    }

    public init(type: FilesystemType, blockSize: Int, sizeBytes: UInt64, label: String? = nil,
                uuid: String? = nil, ioUnit: Int? = nil) {
        self.type = type
        self.ioUnit = ioUnit ?? blockSize
        self.blockSize = blockSize
        self.sizeBytes = sizeBytes
        self.label = label
        self.uuid = uuid
    }
}
