/// A partition's bytes as one source, offset 0 its first byte, whatever ranges of the image they lie in
/// (an LVM logical volume in several runs). Reads across a range boundary are joined.
public struct PartitionBytes<Image: ByteSource>: ByteSource {
    public let image: Image
    public let ranges: [ByteRange]
    public let size: UInt64

    public init(_ image: Image, _ partition: Partition) {
        self.image = image
        ranges = partition.ranges
        size = partition.sizeBytes
    }

    public func read(at offset: UInt64, count: Int) throws(DiskImageError) -> [UInt8] {
        try checkRange(offset, count)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        var position = offset, rangeStart: UInt64 = 0
        for range in ranges where bytes.count < count {
            defer { rangeStart += range.length }
            guard position < rangeStart + range.length else { continue }
            let want = min(UInt64(count - bytes.count), rangeStart + range.length - position)
            bytes += try image.read(at: range.offset + (position - rangeStart), count: Int(want))
            position += want
        }
        return bytes
    }
}
