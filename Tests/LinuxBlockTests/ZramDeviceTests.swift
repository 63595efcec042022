import Glibc
import Testing
@testable import LinuxBlock

extension RootTests {
/// A real zram device (root): add, size, use, stats, reset, remove; removed even when the test fails.
@Suite(.enabled(if: TestSupport.canZram, "needs root and zram hot_add"))
struct ZramDeviceTests {
    @Test func lifecycle() throws {
        let zram = Zram()
        let id = try zram.add()
        var removed = false
        defer { if !removed { _ = try? zram.reset(id); _ = try? zram.remove(id) } }
        #expect(zram.devices().contains(id))

        let size: UInt64 = 16 << 20
        try zram.setAlgorithm(id, "lz4")
        try zram.setDisksize(id, bytes: size)
        #expect(try zram.disksize(id) == size)
        let path = zram.devicePath(id)
        try BlockDevice.makeNode(path, try zram.deviceNumber(id))
        #expect(try BlockDevice.size(of: path) == size)
        #expect(try BlockDevice.logicalBlockSize(of: path) == 4096)
        #expect(try BlockDevice.deviceNumber(of: path) == zram.deviceNumber(id))
        #expect(try FileIO.readText("/sys/block/zram\(id)/comp_algorithm").contains("[lz4]"))
        // Size is fixed once set.
        #expect(throws: SystemError("write", "/sys/block/zram\(id)/disksize", errno: EBUSY)) {
            try zram.setDisksize(id, bytes: size * 2)
        }

        // 1 MiB of non-zero data: zram stores it (same-filled zero pages would not count as data).
        var data = [UInt8](repeating: 0, count: 1 << 20)
        for i in data.indices { data[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 9) }
        let fd = try systemCall("open", path) { open(path, O_WRONLY | O_CLOEXEC) }
        let written = try data.withUnsafeBytes { bytes throws(SystemError) in
            try systemCall("write", path) { write(fd, bytes.baseAddress, bytes.count) }
        }
        try systemCall("fsync", path) { fsync(fd) }
        close(fd)
        #expect(written == data.count)
        let stats = try zram.memoryStats(id)
        #expect(stats.originalBytes >= UInt64(data.count))
        #expect(stats.compressedBytes > 0)
        #expect(stats.memoryUsedBytes > 0)

        try zram.reset(id)
        #expect(try zram.disksize(id) == 0)
        #expect(try zram.memoryStats(id).originalBytes == 0)
        try zram.remove(id)
        removed = true
        #expect(!zram.devices().contains(id))
    }
}
}
