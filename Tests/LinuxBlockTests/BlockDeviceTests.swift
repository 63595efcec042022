import Glibc
import Testing
@testable import LinuxBlock

@Suite struct BlockDeviceQueryTests {
    @Test func deviceNumberRefusesANonBlockFile() {
        #expect(throws: SystemError("stat", "/dev/null", errno: ENOTBLK)) { try BlockDevice.deviceNumber(of: "/dev/null") }
        #expect(throws: SystemError("stat", "/nonexistent/dev", errno: ENOENT)) {
            try BlockDevice.deviceNumber(of: "/nonexistent/dev")
        }
    }
}

extension RootTests {
/// Node creation in a scratch directory (mknod needs root); nodes are never opened.
@Suite(.enabled(if: TestSupport.isRoot, "mknod needs root"))
struct BlockDeviceNodeTests {
    @Test func makeNodeCreatesKeepsReplacesAndRefuses() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let node = "\(directory)/loop99"
        let first = DeviceNumber(major: 7, minor: 99)
        try BlockDevice.makeNode(node, first)
        #expect(try BlockDevice.deviceNumber(of: node) == first)
        var info = stat()
        try #require(lstat(node, &info) == 0)
        #expect(info.st_mode & 0o7777 == 0o600)

        try BlockDevice.makeNode(node, first)  // already right: kept
        #expect(try BlockDevice.deviceNumber(of: node) == first)

        let second = DeviceNumber(major: 7, minor: 98)
        try BlockDevice.makeNode(node, second)  // stale number: replaced
        #expect(try BlockDevice.deviceNumber(of: node) == second)

        // udev's symlink to the right node (/dev/mapper/NAME -> ../dm-N) is kept; one to another is EEXIST.
        let link = "\(directory)/mapper-name"
        #expect(symlink("loop99", link) == 0)
        try BlockDevice.makeNode(link, second)
        #expect(throws: SystemError("mknod", link, errno: EEXIST)) { try BlockDevice.makeNode(link, first) }
        var linkInfo = stat()
        #expect(lstat(link, &linkInfo) == 0 && linkInfo.st_mode & S_IFMT == S_IFLNK)

        let file = "\(directory)/regular"
        try TestSupport.writeText(file, "not a device")
        #expect(throws: SystemError("mknod", file, errno: EEXIST)) { try BlockDevice.makeNode(file, first) }
        #expect(try TestSupport.readText(file) == "not a device")
    }
}
}
