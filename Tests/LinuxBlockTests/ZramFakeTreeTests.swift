import Glibc
import Testing
@testable import LinuxBlock

/// Zram against a fake sysfs tree: which files it reads and writes.
@Suite struct ZramFakeTreeTests {
    /// root/class/zram-control/{hot_add,hot_remove}, root/block/zram{0,3}/{disksize,comp_algorithm,mm_stat,reset,dev}
    private func makeTree() throws -> String {
        let root = TestSupport.makeTemporaryDirectory()
        for directory in ["class", "class/zram-control", "block", "block/zram0", "block/zram3", "block/loop1"] {
            try systemCall("mkdir", directory) { mkdir("\(root)/\(directory)", 0o755) }
        }
        try TestSupport.writeText("\(root)/class/zram-control/hot_add", "3\n")
        try TestSupport.writeText("\(root)/class/zram-control/hot_remove", "")
        for id in [0, 3] {
            try TestSupport.writeText("\(root)/block/zram\(id)/disksize", "0\n")
            try TestSupport.writeText("\(root)/block/zram\(id)/comp_algorithm", "[lzo-rle] lzo lz4\n")
            try TestSupport.writeText("\(root)/block/zram\(id)/reset", "")
            try TestSupport.writeText("\(root)/block/zram\(id)/dev", "252:\(id)\n")
            try TestSupport.writeText("\(root)/block/zram\(id)/mm_stat",
                                      "    4096      73    12288        0    12288        0        0        0        0\n")
        }
        return root
    }

    @Test func addReadsHotAdd() throws {
        let root = try makeTree()
        defer { TestSupport.removeTree(root) }
        let zram = Zram(sysfsRoot: root, devRoot: "/fake-dev")
        #expect(zram.isAvailable)
        #expect(try zram.add() == 3)
        #expect(zram.devicePath(3) == "/fake-dev/zram3")
        #expect(try zram.deviceNumber(3) == DeviceNumber(major: 252, minor: 3))
    }

    @Test func writesLandInTheRightFiles() throws {
        let root = try makeTree()
        defer { TestSupport.removeTree(root) }
        let zram = Zram(sysfsRoot: root)
        try zram.setAlgorithm(3, "lz4")
        try zram.setDisksize(3, bytes: 268_435_456)
        try zram.reset(0)
        try zram.remove(3)
        #expect(try TestSupport.readText("\(root)/block/zram3/comp_algorithm") == "lz4")
        #expect(try TestSupport.readText("\(root)/block/zram3/disksize") == "268435456")
        #expect(try zram.disksize(3) == 268_435_456)
        #expect(try TestSupport.readText("\(root)/block/zram0/reset") == "1")
        #expect(try TestSupport.readText("\(root)/block/zram3/reset") == "")
        #expect(try TestSupport.readText("\(root)/class/zram-control/hot_remove") == "3")
        #expect(try zram.memoryStats(0) == ZramMemoryStats(originalBytes: 4096, compressedBytes: 73, memoryUsedBytes: 12288))
    }

    @Test func listsOnlyZramDevices() throws {
        let root = try makeTree()
        defer { TestSupport.removeTree(root) }
        #expect(Zram(sysfsRoot: root).devices() == [0, 3])
    }

    @Test func missingTreeIsUnavailableAndErrorsNameTheFile() {
        let zram = Zram(sysfsRoot: "/nonexistent/sys")
        #expect(!zram.isAvailable)
        #expect(zram.devices().isEmpty)
        #expect(throws: SystemError("open", "/nonexistent/sys/class/zram-control/hot_add", errno: ENOENT)) {
            try zram.add()
        }
    }

    @Test func garbageInHotAddIsAProtocolError() throws {
        let root = try makeTree()
        defer { TestSupport.removeTree(root) }
        try TestSupport.writeText("\(root)/class/zram-control/hot_add", "not a number\n")
        #expect(throws: SystemError("read", "\(root)/class/zram-control/hot_add", errno: EPROTO)) {
            try Zram(sysfsRoot: root).add()
        }
    }
}
