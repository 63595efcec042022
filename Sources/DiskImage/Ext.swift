/// ext2/3/4: superblock at byte 1024.
enum Ext {
    static let magic: UInt16 = 0xEF53
    static let compatHasJournal: UInt32 = 0x4
    static let incompatJournalDev: UInt32 = 0x8
    static let incompat64Bit: UInt32 = 0x80
    /// Features ext3 understood; anything beyond makes it ext4 (blkid's rule).
    static let ext3Incompat: UInt32 = 0x2 | 0x4 | 0x10  // FILETYPE, RECOVER, META_BG
    static let ext3ROCompat: UInt32 = 0x1 | 0x2 | 0x4   // SPARSE_SUPER, LARGE_FILE, BTREE_DIR

    static func probe<S>(_ r: Region<S>) -> FilesystemInfo? {
        guard let sb = r.read(1024, 1024), sb.le16(56) == magic else { return nil }
        let logBlock = sb.le32(24)
        guard logBlock <= 6 else { return nil }  // 1 KiB ... 64 KiB
        let blockSize = 1024 << Int(logBlock)
        let compat = sb.le32(92), incompat = sb.le32(96), roCompat = sb.le32(100)
        // An external journal device is not a filesystem one can mount.
        guard incompat & incompatJournalDev == 0 else { return nil }

        var blocks = UInt64(sb.le32(4))
        if incompat & incompat64Bit != 0 { blocks |= UInt64(sb.le32(0x150)) << 32 }
        guard let size = checkedProduct(blocks, UInt64(blockSize)) else { return nil }

        let type: FilesystemType
        if incompat & ~ext3Incompat != 0 || roCompat & ~ext3ROCompat != 0 {
            type = .ext4
        } else if compat & compatHasJournal != 0 {
            type = .ext3
        } else {
            type = .ext2
        }
        return FilesystemInfo(type: type, blockSize: blockSize, sizeBytes: size, label: sb.cString(120, 16),
                              uuid: sb.uuidString(104))
    }
}
