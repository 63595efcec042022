import Glibc
import Testing
@testable import LinuxBlock

extension RootTests {
/// The loop device the dm engine puts over a zram COW store for filesystems with blocks under 4 KiB
/// (root): 512-byte sectors over zram's 4 KiB, sub-page writes landing in zram, and LOOP_SET_CAPACITY.
@Suite(.enabled(if: TestSupport.canLoop && TestSupport.canZram, "needs root, /dev/loop-control and zram"))
struct LoopOverDeviceTests {
    @Test func loopOverZramHas512ByteSectorsAndWritesThrough() throws {
        let zram = Zram()
        let id = try zram.add()
        defer { _ = try? zram.reset(id); _ = try? zram.remove(id) }
        try zram.setDisksize(id, bytes: 8 << 20)
        let path = zram.devicePath(id)
        try BlockDevice.makeNode(path, try zram.deviceNumber(id))
        let loop = try LoopDevice.attach(file: path, readOnly: false, autoclear: true, label: "linuxblock-test-cow-\(getpid())")
        var detached = false
        defer { if !detached { try? loop.detach() } }
        #expect(try BlockDevice.logicalBlockSize(of: loop.path) == 512)
        #expect(try FileIO.readValue("/sys/block/loop\(loop.index)/loop/dio") == "0")

        // 1 KiB at a 1 KiB offset: a bio zram would refuse (not 4 KiB aligned); the loop makes it a buffered write.
        let data = (0..<1024).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let fd = try systemCall("open", loop.path) { open(loop.path, O_WRONLY | O_CLOEXEC) }
        let written = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 1024) }
        #expect(fsync(fd) == 0)
        close(fd)
        #expect(written == data.count)
        TestSupport.settleUdev()
        try loop.detach()
        detached = true

        let readFD = try systemCall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(readFD) }
        var page = [UInt8](repeating: 0xff, count: 4096)
        #expect(page.withUnsafeMutableBytes { pread(readFD, $0.baseAddress, $0.count, 0) } == 4096)
        #expect(Array(page[1024..<2048]) == data)
        #expect(page[0..<1024].allSatisfy { $0 == 0 } && page[2048...].allSatisfy { $0 == 0 })
    }

    @Test func setCapacityTakesTheBackingFilesNewSize() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let file = "\(directory)/cow.img"
        try TestSupport.makeFile(file, size: 1 << 20)
        let loop = try LoopDevice.attach(file: file, readOnly: false, autoclear: true, label: "linuxblock-test-capacity")
        defer { try? loop.detach() }
        #expect(try BlockDevice.size(of: loop.path) == 1 << 20)
        #expect(truncate(file, 3 << 20) == 0)
        #expect(try BlockDevice.size(of: loop.path) == 1 << 20, "the loop keeps its size until told")
        try loop.setCapacity()
        #expect(try BlockDevice.size(of: loop.path) == 3 << 20)
        try loop.detach()
        #expect(throws: SystemError("LOOP_SET_CAPACITY", loop.path, errno: EBADF)) { try loop.setCapacity() }
    }
}
}
