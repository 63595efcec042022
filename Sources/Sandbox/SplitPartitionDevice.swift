import DiskImage
import Glibc
import LinuxBlock

/// A partition in several ranges of the image (an LVM logical volume whose segments are not one run of its
/// PV) as one block device: a read-only loop device over the span from the lowest range to the end of the
/// highest, and a dm linear table of one line per range over it. Only device-mapper can join ranges; the
/// loop device alone shows the span, never the partition.
enum SplitPartitionDevice {
    /// The image bytes the loop device covers: every range, and what lies between them.
    static func span(_ partition: Partition) throws(SystemError) -> ByteRange {
        var first = UInt64.max, end: UInt64 = 0
        for range in partition.ranges {
            let (rangeEnd, overflow) = range.offset.addingReportingOverflow(range.length)
            guard !overflow else { throw SystemError("map \(partition.typeName)", "bytes \(range.offset)+\(range.length)", errno: EINVAL) }
            first = min(first, range.offset)
            end = max(end, rangeEnd)
        }
        return ByteRange(offset: first, length: end - first)
    }

    /// One linear line per range, in the partition's order, over `loop` (attached at `span`).
    /// Ranges of whole sectors only: a table cannot address a part of one.
    static func table(_ partition: Partition, span: ByteRange, loop: DeviceNumber) throws(SystemError) -> [DMTarget] {
        var targets: [DMTarget] = [], sector: UInt64 = 0
        for range in partition.ranges {
            guard range.offset % 512 == 0, range.length % 512 == 0, range.length > 0 else {
                throw SystemError("map \(partition.typeName)", "bytes \(range.offset)+\(range.length)", errno: EINVAL)
            }
            targets.append(.linear(start: sector, length: range.length / 512, device: loop,
                                   offset: (range.offset - span.offset) / 512))
            sector += range.length / 512
        }
        return targets
    }
}
