import DiskImage
import Glibc
import LinuxBlock
import Testing
@testable import Sandbox

/// A partition in several ranges of the image (a split LVM volume): a dm linear table of one line per range
/// over one loop device spanning them; refused where there is no device-mapper.
struct SplitPartitionTests {
    static let mib: UInt64 = 1 << 20
    static let sectorsPerMiB: UInt64 = 2048
    /// Extents 0-11 at 2 MiB, extents 12-15 at 50 MiB (after another volume), as lvm-split lays them out.
    static let split = Partition(number: 1001, ranges: [ByteRange(offset: 2 * mib, length: 48 * mib),
                                                        ByteRange(offset: 50 * mib + 64 * mib, length: 16 * mib)],
                                 typeName: "LVM2 logical volume testvg/root")
    static let loop = DeviceNumber(major: 7, minor: 3)

    @Test func oneLinearLinePerRangeOverTheSpan() throws {
        let span = try SplitPartitionDevice.span(Self.split)
        #expect(span == ByteRange(offset: 2 * Self.mib, length: 128 * Self.mib))
        let table = try SplitPartitionDevice.table(Self.split, span: span, loop: Self.loop)
        let s = Self.sectorsPerMiB
        let expected: [DMTarget] = [.linear(start: 0, length: 48 * s, device: Self.loop, offset: 0),
                                    .linear(start: 48 * s, length: 16 * s, device: Self.loop, offset: 112 * s)]
        #expect(table == expected)
    }

    /// LV order is not disk order: the span runs from the lowest range, the lines keep the LV's order.
    @Test func rangesOutOfDiskOrder() throws {
        let p = Partition(number: 1001, ranges: [ByteRange(offset: 20 * Self.mib, length: Self.mib), ByteRange(offset: 4 * Self.mib, length: 3 * Self.mib)],
                          typeName: "LVM2 logical volume vg/a")
        let span = try SplitPartitionDevice.span(p)
        #expect(span == ByteRange(offset: 4 * Self.mib, length: 17 * Self.mib))
        let s = Self.sectorsPerMiB
        let expected: [DMTarget] = [.linear(start: 0, length: s, device: Self.loop, offset: 16 * s),
                                    .linear(start: s, length: 3 * s, device: Self.loop, offset: 0)]
        #expect(try SplitPartitionDevice.table(p, span: span, loop: Self.loop) == expected)
    }

    @Test func aRangeOfPartSectorsIsRefused() {
        let p = Partition(number: 1001, ranges: [ByteRange(offset: 0, length: 1024), ByteRange(offset: 4096, length: 100)],
                          typeName: "LVM2 logical volume vg/a")
        #expect(throws: SystemError.self) { try SplitPartitionDevice.table(p, span: try SplitPartitionDevice.span(p), loop: Self.loop) }
    }

    /// A range whose end is past 2^64 is an error, never a trap (a Swift trap in mkdir kills the mount).
    @Test func aRangeEndingPastTwoToTheSixtyFourIsRefused() {
        let p = Partition(number: 1001, ranges: [ByteRange(offset: 0, length: 512), ByteRange(offset: UInt64.max - 511, length: 1024)],
                          typeName: "LVM2 logical volume vg/a")
        #expect(throws: SystemError.self) { try SplitPartitionDevice.span(p) }
    }

    /// The overlay engine's loops (no device-mapper) refuse before attaching anything: never the span's bytes.
    @Test func withoutDeviceMapperItIsENOTSUP() {
        let loops = ReadOnlyLoops()
        #expect(!loops.joinsRanges)
        let teardown = Teardown()
        do {
            _ = try loops.acquire(file: "/nonexistent/image.img", partition: Self.split, label: "test", teardown: teardown)
            Issue.record("acquired a device for a split partition without device-mapper")
        } catch {
            #expect(error.errno == ENOTSUP)
            #expect("\(error)".contains("LVM2 logical volume testvg/root, which lies in 2 separate ranges"))
        }
        #expect(teardown.runAll().isEmpty)
    }
}
