/// What an ext2/3/4 superblock says about the space in use. `save --shrink` sizes the root from it:
/// resize2fs's own minimum (`-P`) can be far above the content (twice it on a half-full 2 GiB root).
public struct ExtUsage: Sendable, Equatable {
    public let blockCount: UInt64
    public let freeBlocks: UInt64
    public let inodeCount: UInt32
    public let freeInodes: UInt32
    public let blocksPerGroup: UInt32
    public let inodesPerGroup: UInt32

    /// `superblock`: the 1024 bytes at byte 1024 of the filesystem. Nil unless the counts are consistent.
    public init?(superblock sb: [UInt8]) {
        guard sb.count >= 1024, sb.le16(56) == Ext.magic else { return nil }
        let is64Bit = sb.le32(96) & Ext.incompat64Bit != 0
        blockCount = UInt64(sb.le32(4)) | (is64Bit ? UInt64(sb.le32(0x150)) << 32 : 0)
        freeBlocks = UInt64(sb.le32(12)) | (is64Bit ? UInt64(sb.le32(0x158)) << 32 : 0)
        inodeCount = sb.le32(0)
        freeInodes = sb.le32(16)
        blocksPerGroup = sb.le32(32)
        inodesPerGroup = sb.le32(40)
        guard blocksPerGroup > 0, inodesPerGroup > 0, freeBlocks <= blockCount, freeInodes <= inodeCount else { return nil }
    }

    public var usedBlocks: UInt64 { blockCount - freeBlocks }

    /// The blocks of as many whole groups as the inodes in use fill: a resize keeps the inodes per
    /// group, so a smaller filesystem has too few inode slots for them.
    public var blocksForUsedInodes: UInt64 {
        let used = UInt64(inodeCount - freeInodes)
        return (used + UInt64(inodesPerGroup) - 1) / UInt64(inodesPerGroup) * UInt64(blocksPerGroup)
    }
}
