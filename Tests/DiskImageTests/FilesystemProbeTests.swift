import Testing
@testable import DiskImage

@Suite("Filesystem probes")
struct FilesystemProbeTests {
    static func probe(_ img: ImageBuilder, offset: UInt64 = 0) -> FilesystemInfo? {
        FilesystemProbe.probe(img.source, offset: offset, length: img.source.size - offset)
    }

    @Test("ext4 block size and size", arguments: [(UInt32(0), 1024), (2, 4096), (6, 65536)])
    func ext4BlockSizes(logBlockSize: UInt32, blockSize: Int) throws {
        var img = ImageBuilder(sectors: 8)
        img.ext(at: 0, .init(logBlockSize: logBlockSize, blocks: 5000))
        let fs = try #require(Self.probe(img))
        #expect(fs.type == .ext4)
        #expect(fs.blockSize == blockSize)
        #expect(fs.sizeBytes == 5000 * UInt64(blockSize))
        #expect(fs.label == "rootfs")
        #expect(fs.uuid == "12345678-9abc-def0-0123-456789abcdef")
        #expect(fs.isLinuxRoot)
    }

    @Test func ext4BlockCountHighBitsNeed64BitFeature() throws {
        var img = ImageBuilder(sectors: 8)
        img.ext(at: 0, .init(blocks: 1 << 32 | 7))
        #expect(try #require(Self.probe(img)).sizeBytes == (1 << 32 | 7) * 4096)
        img.ext(at: 0, .init(blocks: 1 << 32 | 7, incompat: 0x2 | 0x40))  // no 64bit: high word ignored
        #expect(try #require(Self.probe(img)).sizeBytes == 7 * 4096)
    }

    @Test("ext2/3/4 by features", arguments: [
        (UInt32(0), UInt32(0x2), UInt32(0x1), FilesystemType.ext2),
        (0x4, 0x2, 0x1 | 0x2, .ext3),
        (0x4, 0x2 | 0x4, 0x1, .ext3),          // a dirty ext3 is still ext3
        (0x4, 0x2 | 0x40, 0x1, .ext4),         // extents
        (0x0, 0x2, 0x1 | 0x400, .ext4),        // metadata_csum without a journal
    ])
    func extFlavour(compat: UInt32, incompat: UInt32, roCompat: UInt32, type: FilesystemType) throws {
        var img = ImageBuilder(sectors: 8)
        img.ext(at: 0, .init(compat: compat, incompat: incompat, roCompat: roCompat))
        #expect(try #require(Self.probe(img)).type == type)
    }

    @Test func aDirtyJournalIsStillExt4() throws {
        var img = ImageBuilder(sectors: 8)
        img.ext(at: 0, .init(incompat: 0x2 | 0x4 | 0x40 | 0x80))
        let fs = try #require(Self.probe(img))
        #expect(fs.type == .ext4)
    }

    @Test func journalDeviceAndBadBlockSizeAreNotFilesystems() {
        var img = ImageBuilder(sectors: 8)
        img.ext(at: 0, .init(incompat: 0x8))
        #expect(Self.probe(img) == nil)
        img.ext(at: 0, .init(logBlockSize: 7, incompat: 0x2))
        #expect(Self.probe(img) == nil)
    }

    @Test func probeStaysInsideItsRegion() {
        var img = ImageBuilder(sectors: 16)
        img.ext(at: 4096)
        #expect(FilesystemProbe.probe(img.source, offset: 4096, length: 2047) == nil)  // superblock cut off
        #expect(FilesystemProbe.probe(img.source, offset: 4096, length: 2048)?.type == .ext4)
        #expect(FilesystemProbe.probe(img.source, offset: .max - 10, length: 4096) == nil)
    }

    @Test func fat32() throws {
        var img = ImageBuilder(sectors: 64)
        img.fat32(at: 0, sectors: 64, label: "BOOT       ")
        let fs = try #require(Self.probe(img))
        #expect(fs == FilesystemInfo(type: .vfat, blockSize: 512, sizeBytes: 64 * 512, label: "BOOT", uuid: "E2FC-9700"))
        #expect(!fs.isLinuxRoot)
    }

    @Test func fatWithoutTypeStringIsRejected() {
        var img = ImageBuilder(sectors: 64)
        img.fat32(at: 0, sectors: 64)
        img.put(ascii: "NOTFAT  ", at: 82)
        #expect(Self.probe(img) == nil)
    }

    @Test func xfs() throws {
        var img = ImageBuilder(sectors: 8)
        img.put(ascii: "XFSB", at: 0)
        img.put([0, 0, 0x10, 0], at: 4)                       // block size 4096, big-endian
        img.put([0, 0, 0, 0, 0, 1, 0, 0], at: 8)              // 65536 blocks
        img.put(Array(1...16), at: 32)
        img.put([0x02, 0x00], at: 102)                        // 512-byte sectors
        img.put(ascii: "xroot", at: 108)
        let fs = try #require(Self.probe(img))
        #expect(fs == FilesystemInfo(type: .xfs, blockSize: 4096, sizeBytes: 65536 * 4096, label: "xroot",
                                     uuid: "01020304-0506-0708-090a-0b0c0d0e0f10", ioUnit: 512))
        #expect(fs.isLinuxRoot)
    }

    @Test func btrfs() throws {
        var img = ImageBuilder(sectors: 160)
        let sb = 65536
        img.put(ascii: "_BHRfS_M", at: sb + 64)
        img.put(1 << 30, at: sb + 112, width: 8)
        img.put(4096, at: sb + 144, width: 4)
        img.put(ascii: "broot", at: sb + 299)
        let fs = try #require(Self.probe(img))
        #expect(fs.type == .btrfs)
        #expect(fs.sizeBytes == 1 << 30)
        #expect(fs.label == "broot")
        #expect(fs.uuid == nil)
        #expect(fs.isLinuxRoot)
    }

    @Test func squashfsErofsSwap() throws {
        var sq = ImageBuilder(sectors: 8)
        sq.put(ascii: "hsqs", at: 0)
        sq.put(131072, at: 12, width: 4)
        sq.put(123456, at: 40, width: 8)
        #expect(Self.probe(sq) == FilesystemInfo(type: .squashfs, blockSize: 131072, sizeBytes: 123456))

        var ero = ImageBuilder(sectors: 8)
        ero.put(0xE0F5_E1E2, at: 1024, width: 4)
        ero.bytes[1024 + 12] = 12
        ero.put(10, at: 1024 + 36, width: 4)
        #expect(Self.probe(ero) == FilesystemInfo(type: .erofs, blockSize: 4096, sizeBytes: 40960))

        var swap = ImageBuilder(sectors: 16)
        swap.put(ascii: "SWAPSPACE2", at: 4086)
        swap.put(1, at: 1024, width: 4)
        swap.put(99, at: 1028, width: 4)
        swap.put(ascii: "myswap", at: 1052)
        let s = try #require(Self.probe(swap))
        #expect(s == FilesystemInfo(type: .swap, blockSize: 4096, sizeBytes: 100 * 4096, label: "myswap"))
        #expect(![sq, ero, swap].contains { Self.probe($0)?.isLinuxRoot == true })
    }

    @Test func zerosAreNothing() {
        #expect(Self.probe(ImageBuilder(sectors: 200)) == nil)
    }
}
