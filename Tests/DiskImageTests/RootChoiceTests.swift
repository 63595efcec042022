import Glibc
import Testing
@testable import DiskImage

@Suite("Root choice: what the image boots, then fstab, then the largest")
struct RootChoiceTests {
    /// HAOS-like: 1 FAT boot, 2/3 erofs system0/system1 (same label), 4 small ext4 overlay, 5 ext4 data (largest).
    static let table = PartitionTable(scheme: .gpt, partitions: [
        Partition(number: 1, startByte: 1 << 20, sizeBytes: 32 << 20, typeName: "EFI", gptName: "hassos-boot", partUUID: "b3dd0952-0001"),
        Partition(number: 2, startByte: 33 << 20, sizeBytes: 256 << 20, typeName: "Linux", gptName: "hassos-system0",
                  partUUID: "8d3d53e3-6d49-4c38-8349-aff6859e82fd"),
        Partition(number: 3, startByte: 289 << 20, sizeBytes: 256 << 20, typeName: "Linux", gptName: "hassos-system1",
                  partUUID: "a3ec664e-32ce-4665-95ea-7ae90ce9aa20"),
        Partition(number: 4, startByte: 545 << 20, sizeBytes: 96 << 20, typeName: "Linux", gptName: "hassos-overlay", partUUID: "f1326040-0004"),
        Partition(number: 5, startByte: 641 << 20, sizeBytes: 1024 << 20, typeName: "Linux", gptName: "hassos-data", partUUID: "a52a4597-0005"),
    ], diskSize: 1700 << 20)

    static func probe(_ p: Partition) -> FilesystemInfo? {
        switch p.number {
        case 1: FilesystemInfo(type: .vfat, blockSize: 512, sizeBytes: p.sizeBytes, label: "HASSOS-BOOT", uuid: "1234-5678")
        case 2, 3: FilesystemInfo(type: .erofs, blockSize: 4096, sizeBytes: p.sizeBytes, label: "system", uuid: "eeee0000-0000-0000-0000-000000000000")
        case 4: FilesystemInfo(type: .ext4, blockSize: 4096, sizeBytes: p.sizeBytes, label: "hassos-overlay", uuid: "44440000-0000-0000-0000-000000000000")
        case 5: FilesystemInfo(type: .ext4, blockSize: 4096, sizeBytes: p.sizeBytes, label: "hassos-data", uuid: "55550000-0000-0000-0000-000000000000")
        default: nil
        }
    }

    static func choose(_ roots: [String], override: Int? = nil,
                       fstab: @escaping (Partition) -> [FstabEntry]? = { _ in nil }) throws -> RootChoice.Decision {
        var inputs = RootChoice.Inputs(table: table, probe: probe)
        inputs.kernelRoots = roots.map { KernelRoot(value: $0, file: "boot.scr of partition 1") }
        inputs.override = override
        inputs.fstab = fstab
        return try RootChoice.choose(inputs)
    }

    @Test func kernelRootBeatsTheLargest() throws {
        let d = try Self.choose(["PARTUUID=8d3d53e3-6d49-4c38-8349-aff6859e82fd"])
        #expect(d.root.partition.number == 2)
        #expect(d.root.filesystem.type == .erofs)
        #expect(d.reason == "root=PARTUUID=8d3d53e3-6d49-4c38-8349-aff6859e82fd in boot.scr of partition 1")
    }

    @Test func withoutBootConfigurationTheLargestAsBefore() throws {
        let d = try Self.choose([])
        #expect(d.root.partition.number == 5)
        #expect(d.reason == "the largest partition with a Linux filesystem")
    }

    @Test func duplicateLabelPicksSlotA() throws {
        let d = try Self.choose(["LABEL=system"])
        #expect(d.root.partition.number == 2)
        #expect(d.reason.contains("label system is on partitions 2, 3: slot A"))
        #expect(try Self.choose(["UUID=eeee0000-0000-0000-0000-000000000000"]).root.partition.number == 2)
        #expect(try Self.choose(["PARTLABEL=hassos-system1"]).root.partition.number == 3)
    }

    @Test func unresolvableRootsFallThroughWithTheirReasons() throws {
        let d = try Self.choose(["/dev/nfs", "PARTUUID=00000000-01", "LABEL=HASSOS-BOOT", "/dev/root"])
        #expect(d.root.partition.number == 5)
        #expect(d.passedOver == [
            "root=/dev/nfs in boot.scr of partition 1 names no partition of the image",
            "root=PARTUUID=00000000-01 in boot.scr of partition 1 names no partition of the image",
            "root=LABEL=HASSOS-BOOT in boot.scr of partition 1 names partition 1, which holds vfat",
            "root=/dev/root in boot.scr of partition 1 names no partition of the image",
        ])
    }

    @Test func fstabThatMountsItselfAtRoot() throws {
        let d = try Self.choose([]) { p in
            p.number == 4 ? Fstab.parse("LABEL=hassos-overlay / ext4 defaults 0 1\n") :
            p.number == 5 ? Fstab.parse("LABEL=hassos-overlay / ext4 defaults 0 1\n") : nil
        }
        #expect(d.root.partition.number == 4)
        #expect(d.reason == "its /etc/fstab mounts partition 4 at /")
        #expect(try Self.choose([]) { p in p.number == 4 ? Fstab.parse("/dev/root / auto defaults 1 1\n") : nil }.root.partition.number == 4)
    }

    @Test func overrideWins() throws {
        let d = try Self.choose(["PARTUUID=8d3d53e3-6d49-4c38-8349-aff6859e82fd"], override: 4)
        #expect(d.root.partition.number == 4)
        #expect(d.reason == "--partition 4")
        #expect(throws: DiskImageError.notLinuxFilesystem(partition: 1, found: "vfat")) { try Self.choose([], override: 1) }
        #expect(throws: DiskImageError.noSuchPartition(number: 9, available: [1, 2, 3, 4, 5])) { try Self.choose([], override: 9) }
    }

    @Test func rootOnAnUnservableLogicalVolumeIsENOTSUP() throws {
        var inputs = RootChoice.Inputs(table: Self.table, probe: Self.probe)
        inputs.volumes = [LogicalVolume(group: "vg", name: "thin", mapping: .failure(.unsupportedSegment(volume: "vg/thin", type: "thin")))]
        inputs.kernelRoots = [KernelRoot(value: "/dev/mapper/vg-thin", file: "cmdline.txt")]
        #expect {
            try RootChoice.choose(inputs)
        } throws: { error in
            (error as? DiskImageError)?.errno == ENOTSUP && "\(error)".contains("vg/thin is thin, not linear")
        }
    }

    @Test func rootOnALinearLogicalVolume() throws {
        let lv = Partition(number: LVM.firstVolumeNumber, startByte: 641 << 20, sizeBytes: 512 << 20, typeName: "LVM2 logical volume vg/root")
        var inputs = RootChoice.Inputs(table: Self.table) { p in
            p.number == LVM.firstVolumeNumber ? FilesystemInfo(type: .xfs, blockSize: 4096, sizeBytes: p.sizeBytes) : Self.probe(p)
        }
        inputs.volumes = [LogicalVolume(group: "vg", name: "root", mapping: .success(lv))]
        inputs.kernelRoots = [KernelRoot(value: "/dev/mapper/vg-root", file: "cmdline.txt of partition 1")]
        let d = try RootChoice.choose(inputs)
        #expect(d.root.partition == lv)
        #expect(d.root.filesystem.type == .xfs)
    }
}
