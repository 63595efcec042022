import Glibc
import Testing
@testable import LinuxBlock

/// DeviceHolders on a fake procfs and sysfs: a superblock with nothing else in sight, a process with the node
/// open, one mapping a file of the device (maps gives major:minor in hex).
struct DeviceHoldersTests {
    private func withTrees(_ body: (_ proc: String, _ sys: String) throws -> Void) throws {
        let root = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(root) }
        let proc = root + "/proc", sys = root + "/sys"
        for directory in [proc + "/100/fd", proc + "/200/fd", sys + "/class/block/zram9/holders", sys + "/fs/ext4/zram9", sys + "/fs/xfs"] {
            _ = try Command.run(["mkdir", "-p", directory])
        }
        try TestSupport.writeText(sys + "/class/block/zram9/dev", "253:77\n")
        try body(proc, sys)
    }

    @Test func aSuperblockAloneIsSaidToBeAliveWithNothingInSight() throws {
        try withTrees { proc, sys in
            let holders = DeviceHolders.find(device: "zram9", procRoot: proc, sysRoot: sys)
            #expect(holders.superblocks == [sys + "/fs/ext4/zram9"])
            #expect(holders.mounts.isEmpty && holders.processes.isEmpty && holders.stacked.isEmpty)
            #expect(holders.description == "zram9: superblock \(sys)/fs/ext4/zram9 alive with no mount, fd or holder in sight")
        }
    }

    @Test func processesWithTheNodeOpenOrAFileOfItMappedAreNamed() throws {
        try withTrees { proc, sys in
            try TestSupport.writeText(proc + "/100/comm", "fsx\n")
            try TestSupport.writeText(proc + "/100/maps", "7f00-7f10 r--s 00000000 fd:4d 13 /run/x/big\n7f20-7f30 r--p 00000000 fd:4e 1 /other\n")
            try TestSupport.writeText(proc + "/200/comm", "dd\n")
            #expect(symlink("/dev/zram9", proc + "/200/fd/3") == 0)
            #expect(symlink("/dev/zram99", proc + "/200/fd/4") == 0)
            let holders = DeviceHolders.find(device: "zram9", procRoot: proc, sysRoot: sys)
            #expect(holders.processes == ["pid 100 (fsx) maps a file of it", "pid 200 (dd) fd 3"])
            #expect(holders.description.hasSuffix("superblock \(sys)/fs/ext4/zram9"))
        }
    }
}
