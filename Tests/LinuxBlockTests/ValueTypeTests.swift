import Glibc
import Testing
@testable import LinuxBlock

@Suite struct DeviceNumberTests {
    @Test(arguments: [(UInt32(7), UInt32(3)), (253, 0), (259, 1_048_575), (4095, 17)])
    func roundTripsThroughDevT(major: UInt32, minor: UInt32) {
        let number = DeviceNumber(major: major, minor: minor)
        #expect(DeviceNumber(rawValue: number.rawValue) == number)
        #expect(number.description == "\(major):\(minor)")
        #expect(DeviceNumber(number.description) == number)
    }

    @Test func matchesStatOfARealDevice() throws {
        var info = stat()
        try #require(stat("/dev/null", &info) == 0)
        // /dev/null is character device 1:3 on every Linux.
        #expect(DeviceNumber(rawValue: numericCast(info.st_rdev)) == DeviceNumber(major: 1, minor: 3))
    }

    @Test(arguments: ["", "7", "7:", ":3", "7:3:1", "a:b", "-1:2"])
    func rejectsMalformedText(_ text: String) {
        #expect(DeviceNumber(text) == nil)
    }
}

@Suite struct SystemErrorTests {
    @Test(arguments: [
        ("LOOP_CONFIGURE", "/dev/loop3", EBUSY, "LOOP_CONFIGURE /dev/loop3: Device or resource busy (EBUSY)"),
        ("open", "/x", ENOENT, "open /x: No such file or directory (ENOENT)"),
        ("mount", "/mnt", EROFS, "mount /mnt: Read-only file system (EROFS)"),
    ])
    func describesOperationObjectAndErrno(operation: String, object: String, code: Int32, expected: String) {
        #expect(SystemError(operation, object, errno: code).description == expected)
    }

    @Test func funnelThrowsTheSavedErrno() {
        let path = "/nonexistent/linuxblock-test"
        #expect(throws: SystemError("open", path, errno: ENOENT)) {
            try systemCall("open", path) { open(path, O_RDONLY) }
        }
    }

    @Test func funnelReturnsTheResult() throws {
        let fd = try systemCall("open", "/dev/null") { open("/dev/null", O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        #expect(fd >= 0)
    }

    @Test func funnelRetriesEINTR() throws {
        var calls = 0
        let result = try systemCall("test", "object") { () -> Int32 in
            calls += 1
            if calls < 3 {
                errno = EINTR
                return -1
            }
            return 42
        }
        #expect(result == 42)
        #expect(calls == 3)
    }
}

@Suite struct SnapshotStatusTests {
    @Test(arguments: [
        ("24/1048576 16", SnapshotStatus.active(usedSectors: 24, totalSectors: 1_048_576, metadataSectors: 16)),
        ("0/262144 0\n", .active(usedSectors: 0, totalSectors: 262_144, metadataSectors: 0)),
        ("Invalid", .invalid),
        ("Overflow", .overflow),
        ("Merge failed", .merging("Merge failed")),
    ])
    func parses(line: String, expected: SnapshotStatus) {
        #expect(SnapshotStatus(statusLine: line) == expected)
    }

    @Test(arguments: ["", "Unknown", "24/x 16", "24/1048576", "24 1048576 16", "/ 1"])
    func rejects(line: String) {
        #expect(SnapshotStatus(statusLine: line) == nil)
    }
}

@Suite struct ZramMemoryStatsTests {
    @Test func parsesTheFirstThreeColumns() {
        let line = "  8396800   149282   282624        0   282624       16        0        0        0\n"
        #expect(ZramMemoryStats(mmStat: line)
            == ZramMemoryStats(originalBytes: 8_396_800, compressedBytes: 149_282, memoryUsedBytes: 282_624))
    }

    @Test(arguments: ["", "1 2", "a b c d", "1 -2 3"])
    func rejects(line: String) {
        #expect(ZramMemoryStats(mmStat: line) == nil)
    }
}

@Suite struct MountEntryTests {
    @Test func parsesAnEntryWithOptionalFields() throws {
        let line = "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue"
        let entry = try #require(MountEntry(mountInfoLine: line))
        #expect(entry == MountEntry(mountPoint: "/mnt/parent", source: "/dev/root", type: "ext3",
                                    options: "rw,noatime,errors=continue",
                                    deviceNumber: DeviceNumber(major: 98, minor: 0), id: 36))
        #expect(entry.hasOption("errors=continue") && !entry.hasOption("errors"))
    }

    @Test func parsesAnEntryWithoutOptionalFields() throws {
        let entry = try #require(MountEntry(mountInfoLine: "24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=1k"))
        #expect(entry.mountPoint == "/dev")
        #expect(entry.type == "devtmpfs")
        #expect(entry.options == "rw,relatime,size=1k")
        #expect(entry.deviceNumber == DeviceNumber(major: 0, minor: 6))
    }

    @Test(arguments: [
        (#"/mnt/a\040b"#, "/mnt/a b"),
        (#"/t\011ab\012nl\134bs"#, "/t\tab\nnl\\bs"),
        (#"/not\04escape"#, #"/not\04escape"#),
        (#"/trailing\"#, #"/trailing\"#),
        ("/caf\\303\\251", "/café"),
    ])
    func unescapesOctal(raw: String, expected: String) throws {
        let entry = try #require(MountEntry(mountInfoLine: "1 2 7:3 / \(raw) rw - ext4 \(raw) rw"))
        #expect(entry.mountPoint == expected)
        #expect(entry.source == expected)
    }

    @Test(arguments: ["", "36 35 98:0 /mnt1 /mnt/parent rw", "36 35 x /a /b rw - ext4 /dev/x rw",
                      "36 35 98:0 /mnt1 /mnt/parent rw master:1 ext3 /dev/root rw,errors=continue"])
    func rejectsMalformed(line: String) {
        #expect(MountEntry(mountInfoLine: line) == nil)
    }

    @Test func readsTheLiveTable() {
        // Every Linux process sees its root mount.
        #expect(Mount.mountPoints().contains { $0.mountPoint == "/" })
    }
}

@Suite struct LoopLabelTests {
    @Test(arguments: [("short", "short"), (String(repeating: "a", count: 80), String(repeating: "a", count: 63)),
                      (String(repeating: "é", count: 40), String(repeating: "é", count: 31))])
    func truncatesTo63Bytes(label: String, expected: String) {
        #expect(LoopDevice.truncatedLabel(label) == expected)
        #expect(LoopDevice.truncatedLabel(label).utf8.count <= 63)
    }
}

@Suite struct FilesystemUsageTests {
    @Test func reportsConsistentNumbers() throws {
        let usage = try FilesystemUsage.of("/tmp")
        #expect(usage.blockSize > 0)
        #expect(usage.totalBytes >= usage.freeBytes)
        #expect(usage.freeBytes >= usage.availableBytes)
    }

    @Test func namesThePathOnFailure() {
        #expect(throws: SystemError("statvfs", "/nonexistent/x", errno: ENOENT)) {
            try FilesystemUsage.of("/nonexistent/x")
        }
    }
}

@Suite struct PidNamespaceViewTests {
    @Test func statusLinesGiveStateAndInnermostPid() {
        let text = "Name:\tx\nState:\tZ (zombie)\nTgid:\t4711\nNSpid:\t4711\t3\t1\n"
        #expect(PidNamespaceView.parseStatus(text)?.state == "Z")
        #expect(PidNamespaceView.parseStatus(text)?.innermostPID == 1)
        #expect(PidNamespaceView.parseStatus("State:\tS (sleeping)\n") == nil)
    }
}
