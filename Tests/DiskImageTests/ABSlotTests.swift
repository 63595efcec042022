import Glibc
import Testing
@testable import DiskImage

/// A/B layouts: rpi-image-gen's GPT (slot from autoboot.txt, fstab's /dev/disk/by-slot/active/...) and
/// balenaOS's MBR (resin_root_part in resinOS_uEnv.txt).
@Suite("A/B slots: autoboot.txt, by-slot links, resin_root_part")
struct ABSlotTests {
    /// rpi-image-gen ab_userdata: 1 BOOTCONFIG, 2/3 boot_a/boot_b (FAT BOOT), 4/5 system_a/system_b (erofs, one
    /// UUID), 6 persistent (ext4, the largest).
    static let table = PartitionTable(scheme: .gpt, partitions: [
        Partition(number: 1, startByte: 8 << 20, sizeBytes: 32 << 20, typeName: "FAT", gptName: "bootconfig"),
        Partition(number: 2, startByte: 40 << 20, sizeBytes: 64 << 20, typeName: "FAT", gptName: "boot_a"),
        Partition(number: 3, startByte: 104 << 20, sizeBytes: 64 << 20, typeName: "FAT", gptName: "boot_b"),
        Partition(number: 4, startByte: 168 << 20, sizeBytes: 256 << 20, typeName: "Linux", gptName: "system_a"),
        Partition(number: 5, startByte: 424 << 20, sizeBytes: 256 << 20, typeName: "Linux", gptName: "system_b"),
        Partition(number: 6, startByte: 680 << 20, sizeBytes: 1024 << 20, typeName: "Linux", gptName: "persistent"),
    ], diskSize: 1800 << 20)

    static func probe(_ p: Partition) -> FilesystemInfo? {
        switch p.number {
        case 1: FilesystemInfo(type: .vfat, blockSize: 512, sizeBytes: p.sizeBytes, label: "BOOTCONFIG", uuid: "1111-0001")
        case 2, 3: FilesystemInfo(type: .vfat, blockSize: 512, sizeBytes: p.sizeBytes, label: "BOOT", uuid: "2222-000\(p.number)")
        case 4, 5: FilesystemInfo(type: .erofs, blockSize: 4096, sizeBytes: p.sizeBytes, label: nil, uuid: "5151e000-0000-4000-8000-000000000000")
        case 6: FilesystemInfo(type: .ext4, blockSize: 4096, sizeBytes: p.sizeBytes, label: "PERSISTENT", uuid: "66660000-0000-4000-8000-000000000000")
        default: nil
        }
    }

    static let fstab = Fstab.parse("""
        /dev/disk/by-slot/active/system /              erofs ro,relatime 0 1
        /dev/disk/by-slot/active/boot   /boot/firmware vfat defaults,ro,noatime,nofail  0 2
        LABEL=BOOTFS                    /bootfs        vfat defaults,rw,noatime,errors=panic 0 2
        /persistent/home         /home             none  bind 0  0
        """)

    static func choose(slot: ABSlot) throws -> RootChoice.Decision {
        var inputs = RootChoice.Inputs(table: table, probe: probe)
        inputs.slot = slot
        // Both slots hold the same system, so the same fstab.
        inputs.fstab = { [4, 5].contains($0.number) ? fstab : nil }
        return try RootChoice.choose(inputs)
    }

    @Test func autobootNamesTheSlot() {
        let text = "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
        let slot = ABSlot.fromAutoboot(text, table: Self.table, file: "autoboot.txt of partition 1")
        #expect(slot == ABSlot(letter: "b", reason: "slot B: boot_partition=3 (boot_b) in autoboot.txt of partition 1"))
        // As rpi-image-gen writes it: slot A; [tryboot] is a one-time trial, not the slot.
        let shipped = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
        #expect(ABSlot.fromAutoboot(shipped, table: Self.table, file: "f")?.letter == "a")
        // Lines before any section count as [all]; other sections do not.
        #expect(ABSlot.fromAutoboot("boot_partition=3\n[pi4]\nboot_partition=2\n", table: Self.table, file: "f")?.letter == "b")
    }

    @Test func autobootNamingNoSlotPartitionIsIgnored() {
        for text in ["[all]\nboot_partition=6\n", "boot_partition=9\n", "boot_partition=x\n", "boot_partition=0002222\n", "", "[all\n"] {
            #expect(ABSlot.fromAutoboot(text, table: Self.table, file: "f") == nil, "\(text.debugDescription)")
        }
    }

    @Test func bySlotLinksParse() {
        #expect(FstabSource("/dev/disk/by-slot/active/system") == .slot(name: "system", active: true))
        #expect(FstabSource("/dev/disk/by-slot/other/boot") == .slot(name: "boot", active: false))
        #expect(FstabSource("/dev/disk/by-slot/next/boot") == .other("/dev/disk/by-slot/next/boot"))
        #expect(FstabSource("/dev/disk/by-slot/active/") == .other("/dev/disk/by-slot/active/"))
        #expect(FstabSource("/dev/disk/by-slot/active/a/b") == .other("/dev/disk/by-slot/active/a/b"))
    }

    @Test func theActiveSlotIsTheRootAndItsBootPartitionIsShown() throws {
        for (slot, root, boot) in [(ABSlot.a, 4, 2), (ABSlot(letter: "b", reason: "slot B: test"), 5, 3)] {
            let d = try Self.choose(slot: slot)
            #expect(d.root.partition.number == root)
            #expect(d.reason.contains("/dev/disk/by-slot/active/system: \(slot.reason)"), "\(d.reason)")
            let plan = PartitionMounts.resolve(fstab: Self.fstab, table: Self.table, root: d.root.partition, slot: d.root.slot,
                                               probe: Self.probe, isEmptyDirectory: { _ in true })
            #expect(plan.mounts.map(\.mountPoint) == ["/boot/firmware"])
            #expect(plan.mounts.first?.partition.number == boot)
            #expect(plan.skipped.contains { $0.entry.hasPrefix("LABEL=BOOTFS") && $0.reason == "names no partition of the image" })
        }
    }

    @Test func withoutTheSlotRuleTheLargestWouldWin() throws {
        // What the choice falls back to when no fstab is readable: the persistent data partition (wrong).
        var inputs = RootChoice.Inputs(table: Self.table, probe: Self.probe)
        inputs.fstab = { _ in nil }
        #expect(try RootChoice.choose(inputs).root.partition.number == 6)
    }

    /// LibreELEC: the OS is a file; the largest rule would give the empty STORAGE partition, so it refuses
    /// (ENOTSUP) naming the override that gives STORAGE; a root= or an override still wins.
    @Test func rootInsideAFileIsRefused() throws {
        let table = PartitionTable(scheme: .mbr, partitions: [
            Partition(number: 1, startByte: 4 << 20, sizeBytes: 512 << 20, typeName: "FAT", mbrType: 0x0c, partUUID: "1eec0001-01"),
            Partition(number: 2, startByte: 516 << 20, sizeBytes: 32 << 20, typeName: "Linux", mbrType: 0x83, partUUID: "1eec0001-02"),
        ], diskSize: 600 << 20)
        var inputs = RootChoice.Inputs(table: table) { p in
            p.number == 1 ? FilesystemInfo(type: .vfat, blockSize: 512, sizeBytes: p.sizeBytes, label: "LIBREELEC", uuid: "1EEC-0001")
                : FilesystemInfo(type: .ext4, blockSize: 4096, sizeBytes: p.sizeBytes, label: "STORAGE", uuid: nil)
        }
        #expect(try RootChoice.choose(inputs).root.partition.number == 2)  // without the file: the largest, as before
        inputs.systemFile = (1, "SYSTEM")
        #expect(throws: DiskImageError.rootIsAFile(partition: 1, file: "SYSTEM", largest: 2)) { try RootChoice.choose(inputs) }
        #expect(DiskImageError.rootIsAFile(partition: 1, file: "SYSTEM", largest: 2).errno == ENOTSUP)
        inputs.override = 2
        #expect(try RootChoice.choose(inputs).root.partition.number == 2)
        inputs.override = nil
        inputs.kernelRoots = [KernelRoot(value: "LABEL=STORAGE", file: "cmdline.txt")]
        #expect(try RootChoice.choose(inputs).root.partition.number == 2)
    }

    @Test func balenaRootPartIsHex() throws {
        func root(_ text: String) throws -> String? {
            try BootConfiguration.root(in: Array(text.utf8), kind: .balenaEnv, file: "resinOS_uEnv.txt")?.value
        }
        #expect(try root("resin_root_part=3\n") == "/dev/mmcblk0p3")
        #expect(try root("resin_root_part=2\nresin_root_part=3\n") == "/dev/mmcblk0p3")
        #expect(try root("resin_root_part=0xD\n") == "/dev/mmcblk0p13")
        #expect(try root("resin_root_part=10") == "/dev/mmcblk0p16")  // U-Boot reads hex
        #expect(try root("# resin_root_part=3\n") == nil)
        #expect(try root("resin_root_part=\n") == nil)
        #expect(try root("resin_root_part=zz\n") == nil)
        #expect(try root("resin_root_part=3\nresin_root_part=bogus\n") == nil)
        #expect(try root("resin_root_part=0\n") == nil)
        #expect(try root("resin_root_part=ffffffffffffffffffff\n") == nil)
    }

    @Test func balenaRootPartPicksSlotBOverTheLargest() throws {
        // balenaOS: 1 resin-boot, 2/3 resin-rootA/B, 4 extended, 5 resin-state, 6 resin-data (largest).
        let table = PartitionTable(scheme: .mbr, partitions: [
            Partition(number: 1, startByte: 4 << 20, sizeBytes: 40 << 20, typeName: "FAT", mbrType: 0x0c, partUUID: "ba1e0001-01"),
            Partition(number: 2, startByte: 44 << 20, sizeBytes: 300 << 20, typeName: "Linux", mbrType: 0x83, partUUID: "ba1e0001-02"),
            Partition(number: 3, startByte: 344 << 20, sizeBytes: 300 << 20, typeName: "Linux", mbrType: 0x83, partUUID: "ba1e0001-03"),
            Partition(number: 4, startByte: 644 << 20, sizeBytes: 1100 << 20, typeName: "Extended", mbrType: 0x0f),
            Partition(number: 5, startByte: 648 << 20, sizeBytes: 20 << 20, typeName: "Linux", mbrType: 0x83, partUUID: "ba1e0001-05"),
            Partition(number: 6, startByte: 672 << 20, sizeBytes: 1000 << 20, typeName: "Linux", mbrType: 0x83, partUUID: "ba1e0001-06"),
        ], diskSize: 1800 << 20)
        var inputs = RootChoice.Inputs(table: table) { p in
            p.number == 1 ? FilesystemInfo(type: .vfat, blockSize: 512, sizeBytes: p.sizeBytes, label: "resin-boot", uuid: nil)
                : p.number == 4 ? nil : FilesystemInfo(type: .ext4, blockSize: 4096, sizeBytes: p.sizeBytes, label: "l\(p.number)", uuid: nil)
        }
        let kernelRoot = try BootConfiguration.root(in: Array("resin_root_part=3\n".utf8), kind: .balenaEnv,
                                                    file: "resinOS_uEnv.txt of partition 1")
        inputs.kernelRoots = [try #require(kernelRoot)]
        let d = try RootChoice.choose(inputs)
        #expect(d.root.partition.number == 3)
        #expect(d.reason == "root=/dev/mmcblk0p3 in resinOS_uEnv.txt of partition 1 (resin_root_part)")
    }
}
