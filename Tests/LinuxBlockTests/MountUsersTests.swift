import Glibc
import Testing
@testable import LinuxBlock

/// MountUsers on a fake procfs: a process mapping a file of the device is named (maps gives major:minor in
/// hex), others are not.
struct MountUsersTests {
    @Test func processesMappingAFileOfTheDeviceAreNamed() throws {
        let root = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(root) }
        for pid in ["100", "200"] { try systemCall("mkdir", pid) { mkdir("\(root)/\(pid)", 0o755) } }
        try TestSupport.writeText(root + "/100/comm", "fsx\n")
        try TestSupport.writeText(root + "/100/maps", "7f00-7f10 r--s 00000000 fd:4d 13 /run/x/big\n")
        try TestSupport.writeText(root + "/200/comm", "cat\n")
        try TestSupport.writeText(root + "/200/maps", "7f20-7f30 r--p 00000000 fd:4e 1 /other\n7f40-7f50 r--p 00000000 00:4d 2 /x\n")
        #expect(MountUsers.mapping(DeviceNumber(major: 253, minor: 77), procRoot: root) == ["pid 100 (fsx) maps a file of it"])
        #expect(MountUsers.mapping(DeviceNumber(major: 0, minor: 0x2a), procRoot: root).isEmpty)
        #expect(MountUsers.hex(7) == "07" && MountUsers.hex(0x1ff) == "1ff")
    }
}
