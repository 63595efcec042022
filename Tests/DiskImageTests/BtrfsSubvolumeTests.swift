import Testing
@testable import DiskImage

@Suite("btrfs subvolumes: which one each mount shows (issue 25 item 5)")
struct BtrfsSubvolumeTests {
    @Test func optionsNameASubvolume() throws {
        #expect(try BtrfsSubvolume.from(options: ["subvol=root", "compress=zstd:1"]).get() == .path("root"))
        #expect(try BtrfsSubvolume.from(options: ["subvol=/@/home/"]).get() == .path("@/home"))
        #expect(try BtrfsSubvolume.from(options: ["subvolid=257"]).get() == .id(257))
        // The path wins, as the kernel resolves it first.
        #expect(try BtrfsSubvolume.from(options: ["subvolid=5", "subvol=home"]).get() == .path("home"))
        #expect(try BtrfsSubvolume.from(options: ["defaults"]).get() == nil)
        #expect(try BtrfsSubvolume.from(flags: "compress=zstd,subvol=@").get() == .path("@"))
        #expect(BtrfsSubvolume.path("root").mountOption == "subvol=/root")
        #expect(BtrfsSubvolume.id(5).mountOption == "subvolid=5")
    }

    @Test(arguments: ["subvol=../etc", "subvol=a/./b", "subvol=a\u{1}b", "subvolid=0", "subvolid=-1", "subvolid=x",
                      "subvol=" + String(repeating: "a", count: 4001)])
    func unusableValuesAreRefused(option: String) {
        #expect(throws: InvalidSubvolume.self) { try BtrfsSubvolume.from(options: [option]).get() }
    }

    /// Fedora: GPT 1 EFI FAT, 2 ext4 /boot, 3 btrfs with subvolumes root and home.
    static let table = PartitionTable(scheme: .gpt, partitions: [
        Partition(number: 1, startByte: 1 << 20, sizeBytes: 32 << 20, typeName: "EFI"),
        Partition(number: 2, startByte: 33 << 20, sizeBytes: 64 << 20, typeName: "Linux"),
        Partition(number: 3, startByte: 97 << 20, sizeBytes: 900 << 20, typeName: "Linux"),
        Partition(number: 4, startByte: 997 << 20, sizeBytes: 100 << 20, typeName: "Linux"),
    ], diskSize: 1100 << 20)
    static let btrfsUUID = "5f2c0d1e-9b1a-4c3e-8f7d-0123456789ab"

    static func probe(_ p: Partition) -> FilesystemInfo? {
        switch p.number {
        case 1: FilesystemInfo(type: .vfat, blockSize: 512, sizeBytes: p.sizeBytes, uuid: "ABCD-1234")
        case 2: FilesystemInfo(type: .ext4, blockSize: 4096, sizeBytes: p.sizeBytes, label: "boot", uuid: "b0070000-1111-4222-8333-444455556666")
        case 3: FilesystemInfo(type: .btrfs, blockSize: 4096, sizeBytes: p.sizeBytes, label: "fedora", uuid: btrfsUUID)
        case 4: FilesystemInfo(type: .btrfs, blockSize: 4096, sizeBytes: p.sizeBytes, label: "data", uuid: "dddd0000-0000-0000-0000-000000000000")
        default: nil
        }
    }

    static let fedoraFstab = Fstab.parse("""
        UUID=\(btrfsUUID) / btrfs subvol=root,compress=zstd:1 0 0
        UUID=b0070000-1111-4222-8333-444455556666 /boot ext4 defaults 1 2
        UUID=ABCD-1234 /boot/efi vfat umask=0077,shortname=winnt 0 2
        UUID=\(btrfsUUID) /home btrfs subvol=home,compress=zstd:1 0 0
        UUID=\(btrfsUUID) /again btrfs subvol=root 0 0
        LABEL=data /srv btrfs subvol=srv 0 0
        LABEL=data /var/log btrfs subvolid=260 0 0
        LABEL=data /twice btrfs subvol=/srv/ 0 0
        UUID=\(btrfsUUID) /bad btrfs subvol=../x 0 0
        """)

    @Test func furtherSubvolumesOfTheRootAndOfAnotherBtrfsAreMounted() {
        let plan = PartitionMounts.resolve(fstab: Self.fedoraFstab, table: Self.table, root: Self.table.partitions[2],
                                           rootSubvolume: .path("root"), probe: Self.probe, isEmptyDirectory: { _ in true })
        let placed = plan.mounts.map { "\($0.partition.number)@\($0.mountPoint) \($0.subvolume?.description ?? "-")" }
        #expect(placed == ["2@/boot -", "3@/home subvol=/home", "4@/srv subvol=/srv", "1@/boot/efi -", "4@/var/log subvolid=260"])
        let skipped = Dictionary(plan.skipped.map { ($0.entry.split(separator: " ")[1], $0.reason) }, uniquingKeysWith: { a, _ in a })
        #expect(skipped["/again"] == "the root partition")
        #expect(skipped["/twice"] == "partition 4 (subvol=/srv) is already at /srv")
        #expect(skipped["/bad"] == "\"subvol=../x\" names no usable btrfs subvolume")
    }

    @Test func theRootsSubvolumeComesFromRootflagsElseItsFstab() throws {
        var inputs = RootChoice.Inputs(table: Self.table, probe: Self.probe)
        inputs.fstab = { $0.number == 3 ? Self.fedoraFstab : nil }
        inputs.kernelRoots = [KernelRoot(value: "UUID=\(Self.btrfsUUID)", rootflags: "subvol=@", file: "loader/entries/a.conf")]
        #expect(try RootChoice.choose(inputs).root.subvolume == .path("@"))
        // subvolid= picks it by number (the kernel's rootflags=subvolid=256), also among other flags.
        inputs.kernelRoots = [KernelRoot(value: "UUID=\(Self.btrfsUUID)", rootflags: "compress=zstd:1,subvolid=256", file: "cmdline.txt")]
        #expect(try RootChoice.choose(inputs).root.subvolume == .id(256))
        // Flags naming no subvolume leave it to fstab; an unusable one is passed over with its reason.
        inputs.kernelRoots = [KernelRoot(value: "UUID=\(Self.btrfsUUID)", rootflags: "compress=zstd:1", file: "cmdline.txt")]
        #expect(try RootChoice.choose(inputs).root.subvolume == .path("root"))
        inputs.kernelRoots = [KernelRoot(value: "UUID=\(Self.btrfsUUID)", rootflags: "subvolid=0", file: "cmdline.txt")]
        let refused = try RootChoice.choose(inputs)
        #expect(refused.root.subvolume == .path("root"))
        #expect(refused.passedOver == ["rootflags: \"subvolid=0\" names no usable btrfs subvolume"])
        inputs.kernelRoots = [KernelRoot(value: "UUID=\(Self.btrfsUUID)", file: "grub.cfg")]
        #expect(try RootChoice.choose(inputs).root.subvolume == .path("root"))
        // No boot configuration: its fstab mounts it at / (in subvolume root).
        inputs.kernelRoots = []
        let decision = try RootChoice.choose(inputs)
        #expect(decision.root.partition.number == 3)
        #expect(decision.root.subvolume == .path("root"))
        #expect(decision.reason == "its /etc/fstab mounts partition 3 at /")
        // Nothing says: the filesystem's default subvolume; ext4 roots never carry one.
        inputs.fstab = { _ in nil }
        #expect(try RootChoice.choose(inputs).root.subvolume == nil)
        inputs.kernelRoots = [KernelRoot(value: "LABEL=boot", rootflags: "subvol=root", file: "cmdline.txt")]
        #expect(try RootChoice.choose(inputs).root.subvolume == nil)
    }

    @Test func loaderEntriesNewestFirstAndTheirOptionsJoined() throws {
        #expect(LoaderEntry.order(["m-6.1.9.conf", "m-6.1.10.conf", ".hidden.conf", "readme", "m-6.10.1.conf"])
                == ["m-6.10.1.conf", "m-6.1.10.conf", "m-6.1.9.conf"])
        #expect(LoaderEntry.order((0..<100).map { "e\($0).conf" }).count == 64)
        let entry = "title Fedora\nversion 6.5.6\nlinux /vmlinuz\noptions root=UUID=\(Self.btrfsUUID) ro\n  options rootflags=subvol=root quiet\n"
        let root = try BootConfiguration.root(in: Array(entry.utf8), kind: .loaderEntry, file: "e.conf")
        #expect(root == KernelRoot(value: "UUID=\(Self.btrfsUUID)", rootflags: "subvol=root", file: "e.conf"))
        // Fedora before 30 kept $kernelopts in grubenv: no root= here.
        #expect(try BootConfiguration.root(in: Array("options $kernelopts\n".utf8), kind: .loaderEntry, file: "e.conf") == nil)
    }
}
