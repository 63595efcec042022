import Testing
@testable import DiskImage

@Suite("MBR partition tables")
struct MBRTests {
    /// Raspberry Pi layout: FAT32 boot at sector 8, Linux root after it.
    static func rpi(rootSectors: UInt64 = 100) -> ImageBuilder {
        var img = ImageBuilder(sectors: 16 + Int(rootSectors))
        img.mbrEntry(index: 0, type: 0x0C, start: 8, count: 8)
        img.mbrEntry(index: 1, type: 0x83, start: 16, count: rootSectors)
        img.fat32(at: 8 * 512, sectors: 8)
        img.ext(at: 16 * 512, .init(logBlockSize: 0, blocks: rootSectors / 2))
        return img
    }

    @Test func fat32AndLinux() throws {
        let table = try PartitionTable.read(Self.rpi().source)
        #expect(table.scheme == .mbr)
        #expect(table.diskSize == 116 * 512)
        #expect(table.partitions == [
            Partition(number: 1, startByte: 8 * 512, sizeBytes: 8 * 512, typeName: "W95 FAT32 LBA (0x0c)", mbrType: 0x0C),
            Partition(number: 2, startByte: 16 * 512, sizeBytes: 100 * 512, typeName: "Linux (0x83)", mbrType: 0x83),
        ])
    }

    /// Primary 1 (Linux), 2 (extended at 100, 300 sectors) holding logicals 5 and 6.
    static func withLogicals() -> ImageBuilder {
        var img = ImageBuilder(sectors: 400)
        img.mbrEntry(index: 0, type: 0x83, start: 10, count: 90)
        img.mbrEntry(index: 1, type: 0x05, start: 100, count: 300)
        // EBR at 100: logical at 100+4, link to the next EBR at (extended start)+150.
        img.mbrEntry(sector: 100, index: 0, type: 0x83, start: 4, count: 96)
        img.mbrEntry(sector: 100, index: 1, type: 0x05, start: 150, count: 150)
        // EBR at 250: logical at 250+10; no further link.
        img.mbrEntry(sector: 250, index: 0, type: 0x82, start: 10, count: 140)
        return img
    }

    @Test func extendedWithTwoLogicals() throws {
        let table = try PartitionTable.read(Self.withLogicals().source)
        #expect(table.partitions.map(\.number) == [1, 2, 5, 6])
        let byNumber = Dictionary(uniqueKeysWithValues: table.partitions.map { ($0.number, $0) })
        #expect(byNumber[2]?.isExtendedContainer == true)
        #expect(byNumber[5]?.startByte == 104 * 512)
        #expect(byNumber[5]?.sizeBytes == 96 * 512)
        #expect(byNumber[6]?.startByte == 260 * 512)
        #expect(byNumber[6]?.typeName == "Linux swap (0x82)")
    }

    @Test func ebrWithoutSignatureEndsChain() throws {
        var img = ImageBuilder(sectors: 400)
        img.mbrEntry(index: 0, type: 0x0F, start: 100, count: 300)
        let table = try PartitionTable.read(img.source)
        #expect(table.partitions.map(\.number) == [1])
    }

    @Test func loopingEBRChain() {
        var img = Self.withLogicals()
        // The second EBR links back to the first (relative 0 = the extended start, sector 100).
        img.mbrEntry(sector: 250, index: 1, type: 0x05, start: 0, count: 150)
        #expect(throws: DiskImageError.extendedChainLoop(sector: 100)) { try PartitionTable.read(img.source) }
    }

    @Test func tooLongEBRChain() {
        let ebrs = MBR.maxLogicals + 1
        var img = ImageBuilder(sectors: 1 + 2 * ebrs)
        img.mbrEntry(index: 0, type: 0x05, start: 1, count: UInt64(2 * ebrs))
        for i in 0..<ebrs {
            let sector = UInt64(1 + 2 * i)
            img.mbrEntry(sector: sector, index: 0, type: 0x83, start: 1, count: 1)
            img.mbrEntry(sector: sector, index: 1, type: 0x05, start: UInt64(2 * (i + 1)), count: 2)
        }
        #expect(throws: DiskImageError.extendedChainTooLong(limit: MBR.maxLogicals)) { try PartitionTable.read(img.source) }
    }

    @Test func partitionBeyondEnd() {
        var img = ImageBuilder(sectors: 100)
        img.mbrEntry(index: 0, type: 0x83, start: 50, count: 51)
        #expect(throws: DiskImageError.partitionBeyondEnd(number: 1, startSector: 50, sectorCount: 51, diskSectors: 100)) {
            try PartitionTable.read(img.source)
        }
    }

    @Test func logicalBeyondEnd() {
        var img = Self.withLogicals()
        img.mbrEntry(sector: 250, index: 0, type: 0x83, start: 10, count: 141)
        #expect(throws: DiskImageError.partitionBeyondEnd(number: 6, startSector: 260, sectorCount: 141, diskSectors: 400)) {
            try PartitionTable.read(img.source)
        }
    }

    @Test func ebrBeyondEnd() {
        var img = Self.withLogicals()
        img.mbrEntry(sector: 100, index: 1, type: 0x05, start: 5000, count: 10)
        #expect(throws: DiskImageError.extendedRecordBeyondEnd(sector: 5100, diskSectors: 400)) {
            try PartitionTable.read(img.source)
        }
    }

    @Test func overlappingPartitions() {
        var img = ImageBuilder(sectors: 100)
        img.mbrEntry(index: 0, type: 0x83, start: 10, count: 40)
        img.mbrEntry(index: 2, type: 0x83, start: 49, count: 10)
        #expect(throws: DiskImageError.overlappingPartitions(first: 1, second: 3)) { try PartitionTable.read(img.source) }
    }

    @Test func logicalOverlappingPrimary() {
        var img = Self.withLogicals()
        img.mbrEntry(sector: 100, index: 0, type: 0x83, start: 4, count: 96)
        img.mbrEntry(index: 0, type: 0x83, start: 10, count: 95)  // reaches into the extended area
        #expect(throws: DiskImageError.overlappingPartitions(first: 1, second: 2)) { try PartitionTable.read(img.source) }
    }

    @Test func partitionAtSectorZero() {
        var img = ImageBuilder(sectors: 100)
        img.mbrEntry(index: 1, type: 0x83, start: 0, count: 10)
        #expect(throws: DiskImageError.partitionOverlapsTable(number: 2, startSector: 0)) { try PartitionTable.read(img.source) }
    }

    @Test func emptyEntriesSkipped() throws {
        var img = ImageBuilder(sectors: 100)
        img.mbrEntry(index: 0, type: 0x83, start: 10, count: 0)   // size 0
        img.mbrEntry(index: 1, type: 0x00, start: 10, count: 20)  // type 0
        img.mbrEntry(index: 3, type: 0x83, start: 50, count: 50)
        let table = try PartitionTable.read(img.source)
        #expect(table.partitions.map(\.number) == [4])
    }

    @Test func fatBootSectorIsWholeDiskNotMBR() throws {
        var img = ImageBuilder(sectors: 64)
        img.fat32(at: 0, sectors: 64)
        let table = try PartitionTable.read(img.source)
        #expect(table.scheme == .none)
        #expect(table.partitions.map(\.number) == [0])
        #expect(FilesystemProbe.probe(img.source, offset: 0, length: img.source.size)?.type == .vfat)
    }

    @Test func garbageEntriesWithoutFilesystemGiveNoPartitions() throws {
        var img = ImageBuilder(sectors: 64)
        img.put(ascii: "boot code boot code boot code boot code boot code boot code", at: 446)
        img.signature()
        let table = try PartitionTable.read(img.source)
        #expect(table.scheme == .none)
        #expect(table.partitions.isEmpty)
    }
}
