import Testing
@testable import DiskImage

@Suite("fstab parsing and resolution to partitions")
struct FstabTests {
    @Test func parsesFieldsCommentsAndEscapes() {
        let text = """
            # a comment
            proc            /proc           proc    defaults          0       0
              # indented comment
            PARTUUID=6c586e13-01  /boot/firmware  vfat    defaults          0       2
            LABEL=my\\040data\t/srv/my\\040data ext4 noatime,ro 0 2

            /dev/sda3 none swap sw 0 0
            lonely
            UUID="abcd-1234" /mnt/q vfat
            """
        let entries = Fstab.parse(text)
        #expect(entries == [
            FstabEntry(source: "proc", mountPoint: "/proc", type: "proc", options: ["defaults"]),
            FstabEntry(source: "PARTUUID=6c586e13-01", mountPoint: "/boot/firmware", type: "vfat", options: ["defaults"]),
            FstabEntry(source: "LABEL=my data", mountPoint: "/srv/my data", type: "ext4", options: ["noatime", "ro"]),
            FstabEntry(source: "/dev/sda3", mountPoint: "none", type: "swap", options: ["sw"]),
            FstabEntry(source: "UUID=\"abcd-1234\"", mountPoint: "/mnt/q", type: "vfat", options: ["defaults"]),
        ])
        #expect(entries[2].isReadOnly)
        #expect(entries[3].isSwap)
        #expect(entries[4].spec == .uuid("abcd-1234"))
    }

    @Test func escapesOnlyThreeOctalDigits() {
        #expect(Fstab.unescape(Array("a\\040b".utf8)) == "a b")
        #expect(Fstab.unescape(Array("tab\\011x\\134y".utf8)) == "tab\tx\\y")
        #expect(Fstab.unescape(Array("bad\\09x".utf8)) == "bad\\09x")
        #expect(Fstab.unescape(Array("end\\04".utf8)) == "end\\04")
        #expect(Fstab.unescape(Array("\\777".utf8)) == "\\777")  // above 0xff: kept as written
    }

    @Test(arguments: [
        ("/dev/mmcblk0p1", 1), ("/dev/mmcblk0p12", 12), ("/dev/sda2", 2), ("/dev/vda3", 3), ("/dev/xvda1", 1),
        ("/dev/hda5", 5), ("/dev/nvme0n1p2", 2),
    ])
    func devicePaths(path: String, number: Int) {
        #expect(FstabSource(path) == .partitionNumber(number))
    }

    @Test(arguments: ["/dev/sda", "/dev/mmcblk0", "/dev/nvme0n1", "/dev/mapper/root2", "/dev/sd2", "tmpfs", "/dev/sda0",
                      "//server/share1", "/dev/sdb1", "/dev/mmcblk1", "/dev/sda2x", "/dev/nvme0n1p"])
    func notPartitionDevices(path: String) {
        #expect(FstabSource(path) == .other(path))
    }

    @Test func tagsAndLinks() {
        #expect(FstabSource("PARTUUID=6C586E13-02") == .partUUID("6C586E13-02"))
        #expect(FstabSource("PARTLABEL=EFI system") == .partLabel("EFI system"))
        #expect(FstabSource("LABEL='bootfs'") == .label("bootfs"))
        #expect(FstabSource("/dev/disk/by-uuid/1234-ABCD") == .uuid("1234-ABCD"))
        #expect(FstabSource("/dev/disk/by-partuuid/6c586e13-01") == .partUUID("6c586e13-01"))
        #expect(FstabSource("/dev/disk/by-label/home") == .label("home"))
    }

    @Test func mbrPartUUIDIsSignatureAndNumber() throws {
        var img = MBRTests.rpi()
        img.put(0x6C58_6E13, at: 440, width: 4)
        let table = try PartitionTable.read(img.source)
        #expect(table.partitions.map(\.partUUID) == ["6c586e13-01", "6c586e13-02"])
        #expect(MBR.partUUID(signature: 0xAB, number: 17) == "000000ab-11")
        #expect(MBR.partUUID(signature: 0, number: 1) == nil)
    }

    // MARK: Resolution

    /// Partitions 1 (FAT "bootfs", id E2FC-9700), 2 (ext4 root), 3 (ext4 "home"), 4 (swap-like unknown).
    static let table = PartitionTable(scheme: .mbr, partitions: [
        Partition(number: 1, startByte: 1 << 20, sizeBytes: 64 << 20, typeName: "FAT", mbrType: 0x0C, partUUID: "6c586e13-01"),
        Partition(number: 2, startByte: 65 << 20, sizeBytes: 256 << 20, typeName: "Linux", mbrType: 0x83, partUUID: "6c586e13-02"),
        Partition(number: 3, startByte: 321 << 20, sizeBytes: 64 << 20, typeName: "Linux", mbrType: 0x83, partUUID: "6c586e13-03"),
        Partition(number: 4, startByte: 385 << 20, sizeBytes: 16 << 20, typeName: "swap", mbrType: 0x82, partUUID: "6c586e13-04"),
    ], diskSize: 401 << 20)

    static func probe(_ p: Partition) -> FilesystemInfo? {
        switch p.number {
        case 1: FilesystemInfo(type: .vfat, blockSize: 512, sizeBytes: p.sizeBytes, label: "bootfs", uuid: "E2FC-9700")
        case 2: FilesystemInfo(type: .ext4, blockSize: 4096, sizeBytes: p.sizeBytes, label: "rootfs", uuid: "11111111-2222-3333-4444-555555555555")
        case 3: FilesystemInfo(type: .ext4, blockSize: 4096, sizeBytes: p.sizeBytes, label: "home", uuid: "aaaaaaaa-2222-3333-4444-555555555555")
        case 4: FilesystemInfo(type: .swap, blockSize: 4096, sizeBytes: p.sizeBytes)
        default: nil
        }
    }

    static func resolve(_ fstab: String?, empty: Set<String> = ["/boot/firmware", "/boot"]) -> PartitionMountPlan {
        PartitionMounts.resolve(fstab: fstab.map { Fstab.parse($0) }, table: table, root: table.partitions[1],
                                probe: probe, isEmptyDirectory: { empty.contains($0) })
    }

    static func placed(_ plan: PartitionMountPlan) -> [String] {
        plan.mounts.map { "\($0.partition.number)@\($0.mountPoint)" }
    }

    @Test(arguments: [
        "PARTUUID=6c586e13-01 /boot/firmware vfat defaults 0 2",
        "PARTUUID=6C586E13-01 /boot/firmware vfat defaults 0 2",
        "UUID=e2fc-9700 /boot/firmware vfat defaults 0 2",
        "LABEL=BOOTFS /boot/firmware vfat defaults 0 2",
        "/dev/mmcblk0p1 /boot/firmware/ auto defaults 0 2",
        "/dev/disk/by-uuid/E2FC-9700 /boot//firmware vfat defaults 0 2",
    ])
    func eachWayOfNamingTheBootPartition(line: String) {
        let plan = Self.resolve("PARTUUID=6c586e13-02 / ext4 defaults 0 1\n" + line)
        #expect(Self.placed(plan) == ["1@/boot/firmware"])
        #expect(plan.mounts.first?.fromFstab == true)
    }

    /// vfat's ownership options: later ones override earlier ones, umask sets both masks, the read-only
    /// attribute takes write away from files only; a value vfat refuses leaves the entry out with the reason.
    @Test func fatOwnershipOptionsAsVfatReadsThem() throws {
        let plan = Self.resolve("PARTUUID=6c586e13-01 /boot/firmware vfat defaults,uid=1000,gid=100,umask=0077 0 2")
        let options = try #require(plan.mounts.first?.fatOptions)
        #expect(options.uid == 1000 && options.gid == 100)
        #expect(options.permissions(directory: true, readOnly: false) == 0o700)
        #expect(options.permissions(directory: false, readOnly: false) == 0o700)
        #expect(options.permissions(directory: false, readOnly: true) == 0o500)
        #expect(options.permissions(directory: true, readOnly: true) == 0o700)
        let masks = try FATMountOptions.parse(["umask=022", "fmask=0133", "dmask=027"]).get()
        #expect(masks.permissions(directory: false, readOnly: false) == 0o644)
        #expect(masks.permissions(directory: true, readOnly: false) == 0o750)
        let defaults = FATMountOptions()
        #expect(defaults.uid == 0 && defaults.permissions(directory: false, readOnly: false) == 0o755)
        let refused = Self.resolve("PARTUUID=6c586e13-01 /boot/firmware vfat umask=0xyz 0 2", empty: [])
        #expect(Self.placed(refused) == [])
        #expect(refused.skipped.contains { $0.reason.contains("umask=0xyz") }, "\(refused.skipped)")
        #expect(throws: FATMountOptions.Reason.self) { try FATMountOptions.parse(["uid=pi"]).get() }
    }

    @Test func linuxPartitionsSwapAndForeignEntries() {
        let plan = Self.resolve("""
            proc /proc proc defaults 0 0
            UUID=aaaaaaaa-2222-3333-4444-555555555555 /home ext4 defaults 0 2
            PARTUUID=6c586e13-04 none swap sw 0 0
            /dev/sdb1 /mnt/usb vfat defaults 0 0
            PARTUUID=6c586e13-02 /srv ext4 defaults 0 0
            PARTUUID=6c586e13-01 /boot/firmware vfat ro 0 2
            LABEL=home /data ext4 defaults 0 2
            tmpfs /tmp tmpfs defaults 0 0
            PARTUUID=6c586e13-01 /other vfat noauto 0 0
            """)
        #expect(Self.placed(plan) == ["3@/home", "1@/boot/firmware"])
        #expect(plan.mounts.last?.readOnly == true)
        let reasons = plan.skipped.map(\.reason)
        #expect(reasons.contains("swap"))
        #expect(reasons.contains("the root partition"))
        #expect(reasons.contains("partition 3 is already at /home"))
        #expect(reasons.contains("noauto"))
        #expect(reasons.filter { $0 == "names no partition of the image" }.count == 3)  // proc, /dev/sdb1, tmpfs
    }

    @Test func swapPartitionWithAMountPointIsNotMounted() {
        let plan = Self.resolve("PARTUUID=6c586e13-04 /swapdir ext4 defaults 0 0")
        #expect(Self.placed(plan) == ["1@/boot/firmware"], "only the fallback")
        #expect(plan.skipped.first?.reason == "partition 4 holds swap")
    }

    @Test func fallbackPrefersBootFirmwareThenBoot() {
        #expect(Self.placed(Self.resolve(nil)) == ["1@/boot/firmware"])
        #expect(Self.resolve(nil).mounts.first?.fromFstab == false)
        #expect(Self.placed(Self.resolve("", empty: ["/boot"])) == ["1@/boot"])
        #expect(Self.placed(Self.resolve("# nothing", empty: [])) == [])
    }

    @Test func noFallbackWhenFstabNamesTheFATPartitionOrThereAreTwo() {
        #expect(Self.placed(Self.resolve("LABEL=bootfs /boot vfat defaults 0 0")) == ["1@/boot"])
        let twoFAT = PartitionTable(scheme: .mbr, partitions: Self.table.partitions + [
            Partition(number: 5, startByte: 401 << 20, sizeBytes: 1 << 20, typeName: "FAT", mbrType: 0x0C),
        ], diskSize: 402 << 20)
        let plan = PartitionMounts.resolve(fstab: nil, table: twoFAT, root: twoFAT.partitions[1], probe: { p in
            p.number == 5 ? FilesystemInfo(type: .vfat, blockSize: 512, sizeBytes: 1 << 20) : Self.probe(p)
        }, isEmptyDirectory: { _ in true })
        #expect(plan.mounts.isEmpty)
    }

    @Test func nestedMountsComeParentsFirstAndNothingInsideFAT() {
        let plan = Self.resolve("""
            PARTUUID=6c586e13-01 /boot/efi vfat defaults 0 2
            LABEL=home /boot ext4 defaults 0 2
            LABEL=home2 /boot/efi/x ext4 defaults 0 2
            """)
        #expect(Self.placed(plan) == ["3@/boot", "1@/boot/efi"])
        #expect(Self.resolve("LABEL=bootfs /b vfat defaults\nLABEL=home /b/c ext4 defaults").skipped.last?.reason
                == "inside the FAT partition at /b")
    }

    @Test(arguments: ["boot", "/boot/../etc", "/./boot"])
    func badMountPointsAreSkipped(path: String) {
        let plan = Self.resolve("LABEL=bootfs \(path) vfat defaults", empty: [])
        #expect(plan.mounts.isEmpty)
        #expect(plan.skipped.first?.reason == "mount point is not a plain absolute path")
    }

    @Test func gptPartLabelAndPartUUID() throws {
        let img = GPTTests.image()
        let table = try PartitionTable.read(img.source)
        let probe: (Partition) -> FilesystemInfo? = { p in
            FilesystemInfo(type: p.number == 1 ? .vfat : .ext4, blockSize: 512, sizeBytes: p.sizeBytes)
        }
        for line in ["PARTLABEL=EFI /boot/efi vfat umask=0077 0 1",
                     "PARTUUID=11111111-2222-3333-4444-555555555550 /boot/efi vfat umask=0077 0 1"] {
            let plan = PartitionMounts.resolve(fstab: Fstab.parse(line), table: table, root: table.partitions[1],
                                               probe: probe, isEmptyDirectory: { _ in false })
            #expect(Self.placed(plan) == ["1@/boot/efi"], "\(line)")
        }
    }

    /// sfdisk is the oracle for PARTUUIDs: GPT `--part-uuid`; MBR `--disk-id` (blkid then appends "-NN").
    @Test(.enabled(if: programExists("sfdisk"), "needs sfdisk"), arguments: ["dos", "gpt"])
    func partUUIDsMatchSfdisk(label: String) throws {
        let dir = ScratchDirectory()
        let path = dir.path + "/t.img", out = dir.path + "/uuid"
        let id = label == "dos" ? "0x6c586e13" : "A8C9E3F1-0D7B-4B39-9C3E-6A1F2B3C4D5E"
        try #require(run(["truncate", "-s", "8M", path]) == 0)
        try #require(run(["sh", "-c", "printf 'label: \(label)\\nlabel-id: \(id)\\n2048,4096\\n6144,,\\n' | sfdisk -q \(path)"]) == 0)
        let table = try PartitionTable.read(FileByteSource(path: path))
        #expect(table.partitions.count == 2)
        func sfdisk(_ args: String) throws -> String {
            try #require(run(["sh", "-c", "sfdisk \(args) > \(out)"]) == 0)
            return String(decoding: try FileByteSource(path: out).readAll(), as: UTF8.self)
                .trimmingCharacters(in: [" ", "\n"]).lowercased()
        }
        for p in table.partitions {
            let expected = label == "dos" ? String(try sfdisk("--disk-id \(path)").dropFirst(2)) + "-0\(p.number)"
                                          : try sfdisk("--part-uuid \(path) \(p.number)")
            #expect(p.partUUID == expected)
        }
        if label == "dos" { #expect(table.partitions.map(\.partUUID) == ["6c586e13-01", "6c586e13-02"]) }
    }

    @Test func rootAndOtherDevicePaths() {
        #expect(FstabSource("/dev/root") == .root)
        #expect(FstabSource("/dev/mmcblk1p2") == .partitionNumber(2))
        #expect(FstabSource("/dev/mmcblk12p7") == .partitionNumber(7))
        #expect(FstabSource("/dev/mmcblk123p1") == .other("/dev/mmcblk123p1"))
        #expect(FstabSource("/dev/mmcblkp1") == .other("/dev/mmcblkp1"))
        #expect(FstabSource("/dev/mapper/systemVG-LVRoot") == .logicalVolume(group: "systemVG", volume: "LVRoot"))
        #expect(FstabSource("/dev/mapper/my--vg-root--a") == .logicalVolume(group: "my-vg", volume: "root-a"))
        #expect(FstabSource("/dev/mapper/a-b-c") == .other("/dev/mapper/a-b-c"))
        #expect(FstabSource("/dev/mapper/novolume") == .other("/dev/mapper/novolume"))
        #expect(FstabSource("/dev/fedora/root") == .logicalVolume(group: "fedora", volume: "root"))
        #expect(FstabSource("/dev/disk/foo") == .other("/dev/disk/foo"))
    }

    @Test func devRootInFstabIsTheRootItself() {
        let plan = Self.resolve("/dev/root / auto defaults 1 1\n/dev/root /mnt auto defaults 0 0\n/dev/mmcblk1p1 /boot vfat defaults 0 0\n")
        #expect(Self.placed(plan) == ["1@/boot"])
        #expect(plan.skipped.map(\.reason) == ["the root partition"])
    }

    @Test func logicalVolumesInFstab() {
        let home = Partition(number: LVM.firstVolumeNumber, startByte: 321 << 20, sizeBytes: 64 << 20, typeName: "LVM2 logical volume vg/home")
        let volumes = [LogicalVolume(group: "vg", name: "home", mapping: .success(home)),
                       LogicalVolume(group: "vg", name: "fast", mapping: .failure(.unsupportedSegment(volume: "vg/fast", type: "raid1")))]
        let plan = PartitionMounts.resolve(
            fstab: Fstab.parse("/dev/mapper/vg-home /home ext4 defaults 0 2\n/dev/vg/fast /fast ext4 defaults 0 2\n/dev/vg/none /none ext4 defaults 0 2\n"),
            table: Self.table, root: Self.table.partitions[1], volumes: volumes,
            probe: { $0.number == LVM.firstVolumeNumber ? FilesystemInfo(type: .ext4, blockSize: 4096, sizeBytes: $0.sizeBytes) : Self.probe($0) },
            isEmptyDirectory: { _ in false })
        #expect(Self.placed(plan) == ["\(LVM.firstVolumeNumber)@/home"])
        #expect(plan.skipped.map(\.reason) == ["logical volume vg/fast is raid1, not linear: not supported (only linear volumes are)",
                                              "names no partition of the image"])
    }
}

extension FileByteSource {
    func readAll() throws -> [UInt8] { try read(at: 0, count: Int(size)) }
}

extension String {
    func trimmingCharacters(in set: Set<Character>) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
