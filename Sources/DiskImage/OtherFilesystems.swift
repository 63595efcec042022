/// xfs: big-endian superblock at byte 0.
enum XFS {
    static func probe<S>(_ r: Region<S>) -> FilesystemInfo? {
        guard let sb = r.read(0, 512), sb.matches("XFSB", at: 0) else { return nil }
        let blockSize = sb.be32(4)
        guard blockSize >= 512, blockSize <= 65536, blockSize & (blockSize - 1) == 0,
              let size = checkedProduct(sb.be64(8), UInt64(blockSize)) else { return nil }
        let sectorSize = Int(sb.be16(102))
        return FilesystemInfo(type: .xfs, blockSize: Int(blockSize), sizeBytes: size,
                              label: sb.cString(108, 12), uuid: sb.uuidString(32),
                              ioUnit: (512...Int(blockSize)).contains(sectorSize) ? sectorSize : 512)
    }
}

/// btrfs: superblock at 64 KiB, magic at +64.
enum Btrfs {
    static func probe<S>(_ r: Region<S>) -> FilesystemInfo? {
        guard let sb = r.read(65536, 4096), sb.matches("_BHRfS_M", at: 64) else { return nil }
        let sectorSize = sb.le32(144)
        guard sectorSize >= 512, sectorSize <= 65536, sectorSize & (sectorSize - 1) == 0 else { return nil }
        return FilesystemInfo(type: .btrfs, blockSize: Int(sectorSize), sizeBytes: sb.le64(112),
                              label: sb.cString(299, 256), uuid: sb.uuidString(32))
    }
}

/// squashfs 4: little-endian superblock at byte 0.
enum Squashfs {
    static func probe<S>(_ r: Region<S>) -> FilesystemInfo? {
        guard let sb = r.read(0, 96), sb.matches("hsqs", at: 0) else { return nil }
        let blockSize = sb.le32(12)
        guard blockSize >= 4096, blockSize <= 1 << 20, blockSize & (blockSize - 1) == 0 else { return nil }
        return FilesystemInfo(type: .squashfs, blockSize: Int(blockSize), sizeBytes: sb.le64(40))
    }
}

/// erofs: superblock at byte 1024.
enum EROFS {
    static func probe<S>(_ r: Region<S>) -> FilesystemInfo? {
        guard let sb = r.read(1024, 128), sb.le32(0) == 0xE0F5_E1E2 else { return nil }
        let bits = sb.u8(12)
        guard bits >= 9, bits <= 16 else { return nil }
        let blockSize = 1 << Int(bits)
        return FilesystemInfo(type: .erofs, blockSize: blockSize,
                              sizeBytes: UInt64(sb.le32(36)) * UInt64(blockSize),
                              label: sb.cString(64, 16), uuid: sb.uuidString(48))
    }
}

/// Linux swap: signature in the last 10 bytes of the first page.
enum Swap {
    static let pageSizes = [4096, 8192, 16384, 65536]

    static func probe<S>(_ r: Region<S>) -> FilesystemInfo? {
        for page in pageSizes {
            guard let tail = r.read(UInt64(page - 10), 10),
                  tail == Array("SWAPSPACE2".utf8) || tail == Array("SWAP-SPACE".utf8) else { continue }
            guard let header = r.read(1024, 44) else { return nil }
            let lastPage = UInt64(header.le32(4))
            return FilesystemInfo(type: .swap, blockSize: page, sizeBytes: (lastPage + 1) * UInt64(page),
                                  label: header.cString(28, 16), uuid: header.uuidString(12))
        }
        return nil
    }
}
