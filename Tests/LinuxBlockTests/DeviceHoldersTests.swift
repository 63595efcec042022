import Glibc
import Testing
@testable import LinuxBlock

/// DeviceHolders against a fake /proc and /sys: what it finds, and what it says would free the device.
@Suite struct DeviceHoldersTests {
    /// Pids 10 and 11 share a mount namespace (ours), 20 has another; zram1 is 252:1.
    private func makeTree() throws -> (proc: String, sys: String) {
        let root = TestSupport.makeTemporaryDirectory()
        let proc = "\(root)/proc", sys = "\(root)/sys"
        for directory in ["proc", "proc/self", "proc/self/ns", "sys", "sys/fs", "sys/fs/ext4", "sys/fs/ext4/zram1",
                          "sys/fs/ext4/loop9", "sys/class", "sys/class/block", "sys/class/block/zram1",
                          "sys/class/block/zram1/holders", "sys/class/block/zram2", "sys/class/block/zram2/holders",
                          "sys/class/block/dm-4", "sys/class/block/dm-4/dm", "sys/block", "sys/block/loop3",
                          "sys/block/loop3/loop"] {
            try systemCall("mkdir", directory) { mkdir("\(root)/\(directory)", 0o755) }
        }
        try TestSupport.writeText("\(sys)/class/block/zram1/dev", "252:1\n")
        try TestSupport.writeText("\(sys)/class/block/zram2/dev", "252:2\n")
        try TestSupport.writeText("\(sys)/class/block/dm-4/dm/name", "imgsandbox-9-s1\n")
        try TestSupport.writeText("\(sys)/block/loop3/loop/backing_file", "/dev/zram2\n")
        try systemCall("symlink", "holder") { symlink("../../dm-4", "\(sys)/class/block/zram2/holders/dm-4") }
        try systemCall("symlink", "self ns") { symlink("mnt:[100]", "\(proc)/self/ns/mnt") }
        let mountinfo = [
            "10": "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n30 1 252:1 / /srv/cow\\040store rw - ext4 /dev/zram1 rw\n",
            "11": "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n30 1 252:1 / /srv/cow\\040store rw - ext4 /dev/zram1 rw\n",
            "20": "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n44 1 252:1 / /other rw - ext4 /dev/zram1 rw\n",
        ]
        for (pid, text) in mountinfo {
            for directory in [pid, "\(pid)/ns", "\(pid)/fd"] {
                try systemCall("mkdir", directory) { mkdir("\(proc)/\(directory)", 0o755) }
            }
            try TestSupport.writeText("\(proc)/\(pid)/mountinfo", text)
            try TestSupport.writeText("\(proc)/\(pid)/comm", "cmd\(pid)\n")
            try systemCall("symlink", "ns") { symlink(pid == "20" ? "mnt:[200]" : "mnt:[100]", "\(proc)/\(pid)/ns/mnt") }
        }
        try systemCall("symlink", "fd") { symlink("/dev/zram1", "\(proc)/11/fd/7") }
        try systemCall("symlink", "fd") { symlink("/dev/zram10", "\(proc)/11/fd/8") }
        try systemCall("symlink", "fd") { symlink("socket:[5]", "\(proc)/20/fd/0") }
        return (proc, sys)
    }

    @Test func findsMountsPerNamespaceFdsAndSuperblock() throws {
        let (proc, sys) = try makeTree()
        defer { TestSupport.removeTree(String(proc.dropLast(5))) }
        let holders = DeviceHolders.find(device: "zram1", procRoot: proc, sysRoot: sys)
        #expect(holders.mounts == [.init(pid: 10, mountPoint: "/srv/cow store", inOwnNamespace: true),
                                   .init(pid: 20, mountPoint: "/other", inOwnNamespace: false)])
        #expect(holders.openFiles == [.init(pid: 11, command: "cmd11", fd: 7)])
        #expect(holders.superblocks == ["\(sys)/fs/ext4/zram1"])
        #expect(!holders.onlyKernelHolds)
        #expect(holders.freeingCommands == ["umount -l '/srv/cow store'", "nsenter -t 20 -m umount -l /other", "kill 11"])
        #expect(holders.description.contains("mounted at /other (mount namespace of pid 20)"))
        #expect(DeviceHolders.shellQuoted("/a/it's") == "'/a/it'\\''s'")
    }

    @Test func findsStackedDevicesAndLoops() throws {
        let (proc, sys) = try makeTree()
        defer { TestSupport.removeTree(String(proc.dropLast(5))) }
        let holders = DeviceHolders.find(device: "zram2", procRoot: proc, sysRoot: sys)
        #expect(holders.mounts.isEmpty && holders.openFiles.isEmpty && holders.superblocks.isEmpty)
        #expect(holders.stackedDevices == ["imgsandbox-9-s1"])
        #expect(holders.loops == ["loop3"])
        #expect(holders.freeingCommands == ["dmsetup remove imgsandbox-9-s1", "losetup -d /dev/loop3"])
    }

    @Test func aSuperblockWithNothingElseIsOnlyTheKernels() throws {
        let (proc, sys) = try makeTree()
        defer { TestSupport.removeTree(String(proc.dropLast(5))) }
        let holders = DeviceHolders.find(device: "loop9", procRoot: proc, sysRoot: sys)
        #expect(holders.onlyKernelHolds)
        #expect(holders.freeingCommands.isEmpty)
        #expect(holders.description.contains("alive with no mount"))
        #expect(DeviceHolders.find(device: "zram7", procRoot: proc, sysRoot: sys).isEmpty)
    }
}
