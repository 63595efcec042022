import Testing
@testable import DiskImage

/// A partition in several ranges of the image (an LVM volume in several runs), read as one.
@Suite("Partition bytes")
struct PartitionBytesTests {
    static let image = ByteArraySource((0..<64).map { UInt8($0) })
    /// Bytes 40-49, then 0-9, then 20-23.
    static let split = Partition(number: 1001, ranges: [ByteRange(offset: 40, length: 10), ByteRange(offset: 0, length: 10),
                                                        ByteRange(offset: 20, length: 4)], typeName: "LVM2 logical volume vg/lv")

    @Test func readsAcrossRangesInPartitionOrder() throws {
        let bytes = PartitionBytes(Self.image, Self.split)
        #expect(bytes.size == 24)
        #expect(Self.split.sizeBytes == 24 && Self.split.startByte == 40 && !Self.split.isContiguous)
        #expect(try bytes.read(at: 0, count: 24) == Array(40..<50) + Array(0..<10) + Array(20..<24))
        #expect(try bytes.read(at: 8, count: 14) == [48, 49] + Array(0..<10) + [20, 21])
        #expect(try bytes.read(at: 23, count: 1) == [23])
        #expect(try bytes.read(at: 12, count: 0) == [])
    }

    @Test func readsBeyondThePartitionThrow() {
        let bytes = PartitionBytes(Self.image, Self.split)
        #expect(throws: DiskImageError.readBeyondEnd(offset: 20, count: 5, size: 24)) { try bytes.read(at: 20, count: 5) }
        #expect(throws: DiskImageError.self) { try bytes.read(at: UInt64.max, count: 2) }
    }

    /// An ext4 whose first KiB lies after the rest in the image: found through the ranges, not at the first one.
    @Test func probeFollowsTheRanges() throws {
        var img = ImageBuilder(sectors: 8)
        img.ext(at: 0, .init(blocks: 5000))
        let original = img.source.bytes
        let moved = ByteArraySource(Array(original[1024...]) + Array(original[..<1024]))
        let partition = Partition(number: 1001, ranges: [ByteRange(offset: 3072, length: 1024), ByteRange(offset: 0, length: 3072)],
                                  typeName: "LVM2 logical volume vg/root")
        #expect(FilesystemProbe.probe(moved, partition: partition)?.type == .ext4)
        #expect(FilesystemProbe.probe(moved, offset: partition.startByte, length: partition.sizeBytes) == nil)
        #expect(partition.notContiguousReason("save") == "save: LVM2 logical volume vg/root lies in 2 separate ranges of the image: not supported here")
        #expect(Partition(number: 1, startByte: 0, sizeBytes: 4096, typeName: "x").notContiguousReason("save") == nil)
    }
}
