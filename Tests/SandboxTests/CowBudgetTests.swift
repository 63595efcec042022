import Foundation
import Glibc
import LinuxBlock
import Testing
@testable import Sandbox

/// COW budget logic: warning levels, when a store grows, and the zram ledger's lifecycle on a fake sysfs.
@Suite struct CowBudgetTests {
    static func usage(_ usedMiB: UInt64, of totalMiB: UInt64, max maxMiB: UInt64? = nil,
                      _ state: SandboxState = .active) -> SandboxUsage {
        SandboxUsage(state: state, cowUsedBytes: usedMiB << 20, cowTotalBytes: totalMiB << 20,
                     cowMaxBytes: maxMiB.map { $0 << 20 })
    }

    /// What root may still write to an overlay upper: an ext4 one's free space (root's 5 % share included)
    /// less what ext4 keeps from everyone; a tmpfs one (free = available) has no share.
    @Test func rootAvailableCountsRootsShareNotExt4sOwnReserve() {
        let block: UInt64 = 4096, total: UInt64 = 64 << 20
        let kept = total / block / 50 * block   // 2 % of the blocks, under the 4096-block cap
        let filledByUser = (blockSize: block, totalBytes: total, freeBytes: (4 << 20) + kept, availableBytes: UInt64(0))
        #expect(OverlayEngine.rootAvailable(filledByUser) == 4 << 20)
        let tmpfs = (blockSize: block, totalBytes: total, freeBytes: UInt64(3 << 20), availableBytes: UInt64(3 << 20))
        #expect(OverlayEngine.rootAvailable(tmpfs) == 3 << 20)
        let big: UInt64 = 4 << 30   // 2 % would be 20,971 blocks: ext4 caps it at 4096
        let full = (blockSize: block, totalBytes: big, freeBytes: 4096 * block, availableBytes: UInt64(0))
        #expect(OverlayEngine.rootAvailable(full) == 0)
        #expect(OverlayEngine.rootAvailable(full) < OverlayEngine.fullMargin(totalBytes: big, blockSize: block))
    }

    @Test func alarmRisesAt80And95AndOverflowOnceEach() {
        var alarm = CowAlarm()
        #expect(alarm.update(Self.usage(10, of: 100)) == nil)
        #expect(alarm.update(Self.usage(80, of: 100)) == .high)
        #expect(alarm.update(Self.usage(85, of: 100)) == nil)
        #expect(alarm.update(Self.usage(79, of: 100)) == nil, "hovering just under 80 % does not re-arm")
        #expect(alarm.update(Self.usage(81, of: 100)) == nil)
        #expect(alarm.update(Self.usage(96, of: 100)) == .critical)
        #expect(alarm.update(Self.usage(100, of: 100, .overflowed)) == .overflowed)
        #expect(alarm.update(Self.usage(100, of: 100, .overflowed)) == nil)
    }

    @Test func alarmReArmsAfterFallingWellBelow() {
        var alarm = CowAlarm()
        #expect(alarm.update(Self.usage(90, of: 100)) == .high)
        #expect(alarm.update(Self.usage(50, of: 100)) == nil)
        #expect(alarm.level == .normal)
        #expect(alarm.update(Self.usage(82, of: 100)) == .high)
    }

    @Test func alarmMeasuresAgainstTheMaximumBudget() {
        var alarm = CowAlarm()
        // 100 of 128 MiB now, but the store may grow to 512 MiB: 19.5 %, no warning.
        #expect(alarm.update(Self.usage(100, of: 128, max: 512)) == nil)
        #expect(alarm.update(Self.usage(420, of: 448, max: 512)) == .high)
        #expect(CowAlarm.percent(Self.usage(0, of: 0)) == 0)
    }

    @Test(arguments: [
        (0, 64, 64, false), (1, 64, 64, true), (1, 128, 64, false), (64, 128, 64, false), (65, 128, 64, true),
        (200, 256, 64, true),
    ] as [(UInt64, UInt64, UInt64, Bool)])
    func storeGrowsWhileLessThanOneStepIsFree(usedMiB: UInt64, totalMiB: UInt64, stepMiB: UInt64, grows: Bool) {
        #expect(CowStore.needsGrowth(usedBytes: usedMiB << 20, totalBytes: totalMiB << 20, stepBytes: stepMiB << 20) == grows)
    }

    @Test func effectiveBudgetAndGrow() {
        var settings = SandboxSettings()
        settings.cowSize = 64 << 20
        #expect(settings.effectiveCowMax == 64 << 20)
        #expect(settings.effectiveGrow == 64 << 20)
        settings.cowMax = 512 << 20
        #expect(settings.effectiveCowMax == 512 << 20)
        #expect(settings.effectiveGrow == 512 << 20, "the filesystem has room for the whole maximum budget")
        settings.cowMax = 1 << 20
        #expect(settings.effectiveCowMax == 64 << 20, "a maximum below the size is the size")
        #expect(CowStore.pageRounded(4097) == 4096)
    }

    /// root/class/zram-control/{hot_add,hot_remove}, root/block/zram5/{disksize,reset}
    private func makeFakeSysfs() throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("zram-ledger-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/class/zram-control", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/block/zram5", withIntermediateDirectories: true)
        try "5\n".write(toFile: root + "/class/zram-control/hot_add", atomically: true, encoding: .utf8)
        for file in ["class/zram-control/hot_remove", "block/zram5/disksize", "block/zram5/reset"] {
            try "".write(toFile: root + "/" + file, atomically: true, encoding: .utf8)
        }
        return root
    }

    @Test func ledgerRecordsEachAddedDeviceUntilItIsFreed() throws {
        let root = try makeFakeSysfs()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let ledger = root + "/run/zram"
        try FileManager.default.createDirectory(atPath: root + "/run", withIntermediateDirectories: true)
        let allocator = ZramAllocator(zram: Zram(sysfsRoot: root, devRoot: root + "/dev"), ledger: ledger)
        let id = try allocator.add(bytes: 1 << 20)
        #expect(id == 5)
        #expect(ZramAllocator.recorded(in: ledger) == [5])
        #expect(try String(contentsOfFile: root + "/block/zram5/disksize", encoding: .utf8) == "1048576")
        try allocator.free(id)
        #expect(ZramAllocator.recorded(in: ledger).isEmpty)
        #expect(try String(contentsOfFile: root + "/block/zram5/reset", encoding: .utf8) == "1")
        #expect(try String(contentsOfFile: root + "/class/zram-control/hot_remove", encoding: .utf8) == "5")
    }

    @Test func aFailedSizeLeavesNoRecord() throws {
        let root = try makeFakeSysfs()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.removeItem(atPath: root + "/block/zram5/disksize")
        let ledger = root + "/zram"
        let allocator = ZramAllocator(zram: Zram(sysfsRoot: root, devRoot: root + "/dev"), ledger: ledger)
        #expect(throws: SandboxError.self) { try allocator.add(bytes: 1 << 20) }
        #expect(ZramAllocator.recorded(in: ledger).isEmpty)
    }
}
