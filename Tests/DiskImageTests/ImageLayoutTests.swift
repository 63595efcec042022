import Glibc
import Testing
@testable import DiskImage

@Suite("Choosing the root partition")
struct ImageLayoutTests {
    /// MBR: 1 FAT32 (8 sectors), 2 and 3 ext4 of the given sizes.
    static func image(linuxSizes a: UInt64, _ b: UInt64) -> ImageBuilder {
        var img = ImageBuilder(sectors: 16 + Int(a + b))
        img.mbrEntry(index: 0, type: 0x0C, start: 8, count: 8)
        img.fat32(at: 8 * 512, sectors: 8)
        img.mbrEntry(index: 1, type: 0x83, start: 16, count: a)
        img.ext(at: 16 * 512)
        img.mbrEntry(index: 2, type: 0x83, start: 16 + a, count: b)
        img.ext(at: (16 + a) * 512)
        return img
    }

    @Test("largest Linux partition wins, ties go to the lower number", arguments: [
        (UInt64(20), UInt64(30), 3), (30, 20, 2), (20, 20, 2),
    ])
    func largest(a: UInt64, b: UInt64, expected: Int) throws {
        let root = try ImageLayout.findRoot(in: Self.image(linuxSizes: a, b).source)
        #expect(root.partition.number == expected)
        #expect(root.filesystem.type == .ext4)
        #expect(root.table.partitions.count == 3)
    }

    @Test func overrideChoosesThatPartition() throws {
        let root = try ImageLayout.findRoot(in: Self.image(linuxSizes: 20, 30).source, partitionNumber: 2)
        #expect(root.partition.number == 2)
        #expect(root.partition.startByte == 16 * 512)
    }

    @Test func overridePointingAtFAT() {
        #expect(throws: DiskImageError.notLinuxFilesystem(partition: 1, found: "vfat")) {
            try ImageLayout.findRoot(in: Self.image(linuxSizes: 20, 30).source, partitionNumber: 1)
        }
        #expect(DiskImageError.notLinuxFilesystem(partition: 1, found: "vfat").errno == EMEDIUMTYPE)
    }

    @Test func overridePointingAtExtendedContainer() {
        #expect(throws: DiskImageError.notLinuxFilesystem(partition: 2, found: "extended partition")) {
            try ImageLayout.findRoot(in: MBRTests.withLogicals().source, partitionNumber: 2)
        }
    }

    @Test func overrideNoSuchPartition() {
        #expect(throws: DiskImageError.noSuchPartition(number: 7, available: [1, 2, 3])) {
            try ImageLayout.findRoot(in: Self.image(linuxSizes: 20, 30).source, partitionNumber: 7)
        }
    }

    @Test func logicalPartitionCanBeRoot() throws {
        var img = MBRTests.withLogicals()
        img.ext(at: 104 * 512)
        let root = try ImageLayout.findRoot(in: img.source)
        #expect(root.partition.number == 5)
    }

    @Test func noLinuxPartition() {
        var img = ImageBuilder(sectors: 32)
        img.mbrEntry(index: 0, type: 0x0C, start: 8, count: 8)
        img.fat32(at: 8 * 512, sectors: 8)
        img.mbrEntry(index: 1, type: 0x83, start: 16, count: 16)  // Linux type, but zeros inside
        #expect(throws: DiskImageError.noLinuxPartition(scheme: .mbr, partitionCount: 2)) {
            try ImageLayout.findRoot(in: img.source)
        }
        #expect(DiskImageError.noLinuxPartition(scheme: .mbr, partitionCount: 2).errno == EMEDIUMTYPE)
    }

    @Test func wholeDiskExt4() throws {
        var img = ImageBuilder(sectors: 64)
        img.ext(at: 0)
        let root = try ImageLayout.findRoot(in: img.source)
        #expect(root.table.scheme == .none)
        #expect(root.partition == Partition(number: 0, startByte: 0, sizeBytes: 64 * 512, typeName: "Whole disk (ext4)"))
        #expect(try ImageLayout.findRoot(in: img.source, partitionNumber: 0).partition.number == 0)
    }

    @Test func wholeDiskFATIsNoLinux() {
        var img = ImageBuilder(sectors: 64)
        img.fat32(at: 0, sectors: 64)
        #expect(throws: DiskImageError.noLinuxPartition(scheme: .none, partitionCount: 1)) {
            try ImageLayout.findRoot(in: img.source)
        }
    }

    @Test func gptRoot() throws {
        var img = GPTTests.image()
        img.ext(at: 80 * 512)
        let root = try ImageLayout.findRoot(in: img.source)
        #expect(root.partition.number == 2)
        #expect(root.partition.gptName == "rööt 🐧")
    }

    @Test("degenerate sizes", arguments: [
        (0, DiskImageError.emptyImage),
        (1000, .sizeNotSectorMultiple(size: 1000)),
        (511, .sizeNotSectorMultiple(size: 511)),
    ])
    func degenerateSizes(size: Int, error: DiskImageError) {
        var bytes = [UInt8](repeating: 0, count: size)
        if size >= 512 { bytes[510] = 0x55; bytes[511] = 0xAA }
        #expect(throws: error) { try ImageLayout.findRoot(in: ByteArraySource(bytes)) }
        #expect(error.errno == EINVAL)
    }

    @Test func descriptionsNameTheNumbers() {
        #expect(DiskImageError.sizeNotSectorMultiple(size: 1000).description.contains("1000"))
        #expect(DiskImageError.partitionBeyondEnd(number: 3, startSector: 50, sectorCount: 51, diskSectors: 100)
            .description == "partition 3 (sectors 50+51) extends beyond the end of the image (100 sectors)")
        #expect(DiskImageError.readFailed(offset: 0, count: 512, errno: EIO).errno == EIO)
    }
}
