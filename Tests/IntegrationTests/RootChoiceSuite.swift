import DiskImage
import Foundation
import Glibc
import LinuxBlock
import Testing

/// The root is what the image boots (issue 25): cmdline.txt's root= beats "the largest Linux partition".
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct RootChoiceSuite {
    @Test func bootConfigurationChoosesTheRoot() throws {
        let fixture = try ServeFixture(images: [("p2", "boot-names-p2", []), ("ext", "extended-root", []),
                                                ("garbage", "boot-garbage-cmdline", [])])
        defer { fixture.close() }
        try fixture.start()
        let p2 = fixture.sandbox("p2", "s"), ext = fixture.sandbox("ext", "s")
        #expect(mkdir(p2, 0o755) == 0, "mkdir p2: \(String(cString: strerror(errno)))")
        #expect(mkdir(ext, 0o755) == 0, "mkdir ext: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(p2)/which-partition") == "p2 root\n")
        #expect(FileChecks.readFile("\(ext)/which-partition") == "p5 root\n")
        // extended-root's fstab puts /dev/mmcblk0p1 at /boot: the FAT partition with the cmdline that chose.
        #expect(FileChecks.readFile("\(ext)/boot/cmdline.txt") == "console=ttyS0 root=/dev/mmcblk0p5 rootwait\n")
        try FileChecks.writeFile("\(p2)/written", "stays in the sandbox")
        let roots = try fixture.status().reduce(into: [String: String]()) { $0[$1["image"] as? String ?? ""] = $1["root"] as? String }
        #expect(roots["p2"] == "partition 2 (ext4): root=PARTUUID=5eed0002-02 in cmdline.txt of partition 1")
        #expect(roots["ext"] == "partition 5 (ext4): root=/dev/mmcblk0p5 in cmdline.txt of partition 1")
        #expect(fixture.waitForLog { $0.contains("image p2: root is partition 2 (ext4): root=PARTUUID=5eed0002-02 in cmdline.txt of partition 1") })
        // A 1 MiB cmdline.txt of random bytes: refused unread with one line, the image still served: by the next
        // rule, partition 2's fstab mounts /dev/mmcblk0p2 (itself) at / (partition 3's copy names partition 2 too).
        let garbage = fixture.sandbox("garbage", "s")
        #expect(mkdir(garbage, 0o755) == 0, "mkdir garbage: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(garbage)/which-partition") == "p2 root\n")
        #expect(fixture.waitForLog {
            $0.contains("image garbage: cmdline.txt of partition 1 is 1048576 bytes, more than the 262144 a boot configuration may have: not read")
        })
        #expect(rmdir(garbage) == 0)
        #expect(rmdir(p2) == 0)
        #expect(rmdir(ext) == 0)
        #expect(fixture.stop() == 0)
    }

    /// HAOS: boot.scr (mkimage) names the erofs system0 by PARTUUID. Mounted read-only as an overlay's lower
    /// layer (on the dm engine too), the sandbox is writable.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/mkimage")
                   && FileManager.default.isExecutableFile(atPath: "/usr/bin/mkfs.erofs"), "needs mkimage and mkfs.erofs"))
    func erofsRootNamedByBootScript() throws {
        let fixture = try ServeFixture(images: [("haos", "haos-like", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("haos", "s")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(sandbox)/which-partition") == "system0\n")
        try FileChecks.writeFile("\(sandbox)/which-partition", "changed")
        #expect(FileChecks.readFile("\(sandbox)/which-partition") == "changed")
        let root = try fixture.status().first?["root"] as? String
        #expect(root == "partition 2 (erofs): root=PARTUUID=8d3d53e3-6d49-4c38-8349-aff6859e82fd in boot.scr of partition 1")
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
    }

    /// No FAT partition names a root: the files on the Linux partitions do (read through a read-only mount),
    /// else the candidate whose own /etc/fstab mounts it at /. Partition 3, the largest, is data each time.
    @Test func linuxPartitionsFilesChooseTheRoot() throws {
        let fixture = try ServeFixture(images: [("bls", "bls-names-p2", []), ("armbian", "armbian-env", []),
                                                ("fstab", "fstab-self", [])])
        defer { fixture.close() }
        try fixture.start()
        for image in ["bls", "armbian", "fstab"] {
            let sandbox = fixture.sandbox(image, "s")
            #expect(mkdir(sandbox, 0o755) == 0, "mkdir \(image): \(String(cString: strerror(errno)))")
            #expect(FileChecks.readFile("\(sandbox)/which-partition") == "p2 root\n", "\(image)")
        }
        // The BLS entry with the highest version (6.1.10, not 6.1.9 whose root= names partition 3); its /boot
        // is partition 1, mounted from the root's fstab.
        #expect(FileChecks.readFile("\(fixture.sandbox("bls", "s"))/boot/grub2/grub.cfg") == "insmod blscfg\nblscfg\n")
        let roots = try fixture.status().reduce(into: [String: String]()) { $0[$1["image"] as? String ?? ""] = $1["root"] as? String }
        #expect(roots["bls"] == "partition 2 (ext4): root=UUID=2f00c0de-2222-4333-8444-555566667777 in loader/entries/m-6.1.10.conf of partition 1")
        #expect(roots["armbian"] == "partition 2 (ext4): root=UUID=2f00c0de-2222-4333-8444-555566667777 in boot/armbianEnv.txt of partition 2")
        #expect(roots["fstab"] == "partition 2 (ext4): its /etc/fstab mounts partition 2 at /")
        // pristine/ chooses the same way.
        #expect(FileChecks.readFile("\(fixture.mountpoint)/bls/pristine/which-partition") == "p2 root\n")
        for image in ["bls", "armbian", "fstab"] { #expect(rmdir(fixture.sandbox(image, "s")) == 0) }
        #expect(fixture.stop() == 0)
    }

    /// Issue 25 item 8: NixOS's sd-image has no /etc/fstab until its first boot: the root is its only Linux
    /// partition and the FAT partition goes to the root's empty /boot/firmware, as before.
    @Test func imageWithoutFstabKeepsWorking() throws {
        let fixture = try ServeFixture(images: [("nixos", "nixos-like", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("nixos", "s")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.stat("\(sandbox)/etc/fstab") == nil)
        #expect(FileChecks.stat("\(sandbox)/nix/store") != nil)
        #expect(FileChecks.readFile("\(sandbox)/boot/firmware/config.txt") == "arm_64bit=1\nenable_uart=1\n")
        try FileChecks.writeFile("\(sandbox)/boot/firmware/written", "in the FAT partition's COW")
        try FileChecks.writeFile("\(sandbox)/etc/written", "in the root's COW")
        let diff = try ChangeFixture.diff(sandbox)
        #expect(diff.output.contains("added /boot/firmware/written") && diff.output.contains("added /etc/written"), "\(diff.output)")
        #expect(try fixture.status().first?["root"] as? String == "partition 2 (ext4): the largest partition with a Linux filesystem")
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
    }

    /// LibreELEC's OS is the squashfs file SYSTEM on its FAT partition: no partition is its root, and the
    /// largest Linux partition is its empty STORAGE. mkdir says so (ENOTSUP, one line naming the way to its
    /// data); `--partition NAME=2` serves STORAGE.
    @Test func rootInsideAFileIsRefusedWithTheWayToItsData() throws {
        let fixture = try ServeFixture(images: [("libreelec", "libreelec-like", []), ("data", "libreelec-like", [])])
        defer { fixture.close() }
        try fixture.start(["--partition", "data=2"])
        let refused = fixture.sandbox("libreelec", "s")
        #expect(mkdir(refused, 0o755) == -1 && errno == ENOTSUP, "mkdir: \(String(cString: strerror(errno)))")
        #expect(fixture.waitForLog { $0.contains("the OS is the squashfs file SYSTEM on partition 1 (LibreELEC's layout), not a partition: "
            + "a root inside a file is not served; --partition NAME=2 serves partition 2, its data partition") })
        #expect(FileChecks.stat(refused) == nil)
        let data = fixture.sandbox("data", "s")
        #expect(mkdir(data, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(data)/which-partition") == "libreelec STORAGE\n")
        #expect(rmdir(data) == 0)
        #expect(fixture.stop() == 0)
    }

    @Test func perImagePartitionOverride() throws {
        let fixture = try ServeFixture(images: [("p2", "boot-names-p2", []), ("ext", "extended-root", [])])
        defer { fixture.close() }
        try fixture.start(["--partition", "p2=3"])
        let p2 = fixture.sandbox("p2", "s"), ext = fixture.sandbox("ext", "s")
        #expect(mkdir(p2, 0o755) == 0)
        #expect(mkdir(ext, 0o755) == 0)
        #expect(FileChecks.readFile("\(p2)/which-partition") == "p3 data\n")
        #expect(FileChecks.readFile("\(ext)/which-partition") == "p5 root\n")
        #expect(rmdir(p2) == 0)
        #expect(rmdir(ext) == 0)
        #expect(fixture.stop() == 0)
    }
}

/// A root on a linear LVM2 logical volume: a loop device with offset and size limit on the overlay engine, the
/// base device's dm linear table over the image's loop device on the dm engine (the VM). The host's LVM never
/// sees the image's volume group: no device the daemon makes starts at the PV, so neither `pvs` (scanning
/// every device) nor udev's lvm2 rules (autoactivation) find it.
@Suite(.serialized, .enabled(if: Environment.canServe && FileManager.default.isExecutableFile(atPath: "/sbin/pvcreate"),
                             "needs root, FUSE and lvm2's tools"))
struct LVMRootSuite {
    /// A linear root LV in two runs of its PV (lvextend after another LV), its ext4 filling both: on the dm
    /// engine base is a linear table of one line per run over one loop device, and diff's pristine copy is
    /// joined the same way. A 52 MiB file reaches into the second run: its checksum proves the mapping.
    @Test(.enabled(if: Environment.engine == "dm", "needs device-mapper to join the runs"))
    func rootVolumeInTwoRuns() throws {
        let fixture = try ServeFixture(images: [("split", "lvm-split", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("split", "s")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(sandbox)/which-partition") == "lv root\n")
        let check = try run(["sh", "-c", "cd '\(sandbox)' && sha256sum -c segment-filler.sha256"], allowFailure: true)
        #expect(check.status == 0, "the file across both runs reads wrong: \(check.output)")
        #expect(FileChecks.readFile("\(sandbox)/srv/which-partition") == "lv data\n")
        try FileChecks.writeFile("\(sandbox)/written", "stays in the sandbox")
        let diff = try ChangeFixture.diff(sandbox).output
        #expect(diff.contains("added /written"), "\(diff)")
        #expect(!diff.contains("segment-filler"), "the pristine copy reads the runs wrong: \(diff)")
        // pristine/: the read-only view, joined by its own dm device.
        let pristine = "\(fixture.mountpoint)/split/pristine"
        let pristineCheck = try run(["sh", "-c", "cd '\(pristine)' && sha256sum -c segment-filler.sha256"], allowFailure: true)
        #expect(pristineCheck.status == 0, "pristine/ reads the runs wrong: \(pristineCheck.output)")
        #expect(FileChecks.stat("\(pristine)/written") == nil)
        // save copies, grows and shrinks the root as one range of the output: refused, nothing written.
        let output = "\(fixture.work)/saved.img"
        let saved = try run([Paths.binary, "save", "--quiet", sandbox, output], allowFailure: true)
        #expect(saved.status != 0 && saved.output.contains("lies in 2 separate ranges of the image: not supported"), "\(saved.output)")
        #expect(FileChecks.stat(output) == nil && FileChecks.stat(output + ".partial") == nil)
        let other = fixture.sandbox("split", "t")
        #expect(mkdir(other, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.stat("\(other)/written") == nil)
        #expect(rmdir(other) == 0)
        #expect(rmdir(sandbox) == 0)
        #expect(FileChecks.stat(sandbox) == nil)
        #expect(fixture.stop() == 0)
    }

    /// testvg over two PVs (partitions 2 and 3); testvg/data, at /srv in fstab, is the first PV's last 16 MiB
    /// and the second's first 24 MiB, a PV header between them. On dm: a partition of the sandbox like any
    /// other, base joined by a linear table; a 28 MiB file reaches into the second PV: its checksum proves
    /// the mapping, in the sandbox and in pristine/.
    @Test(.enabled(if: Environment.engine == "dm", "needs device-mapper to join the runs"))
    func dataVolumeAcrossTwoPhysicalVolumes() throws {
        let fixture = try ServeFixture(images: [("two", "lvm-two-pv", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("two", "s")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(sandbox)/which-partition") == "lv root\n")
        #expect(FileChecks.readFile("\(sandbox)/srv/which-partition") == "lv data\n")
        let check = try run(["sh", "-c", "cd '\(sandbox)/srv' && sha256sum -c pv-filler.sha256"], allowFailure: true)
        #expect(check.status == 0, "the file across both PVs reads wrong: \(check.output)")
        try FileChecks.writeFile("\(sandbox)/srv/written", "in the data volume's COW")
        let diff = try ChangeFixture.diff(sandbox).output
        #expect(diff.contains("added /srv/written"), "\(diff)")
        #expect(!diff.contains("pv-filler"), "the pristine copy reads the runs wrong: \(diff)")
        let pristine = "\(fixture.mountpoint)/two/pristine/srv"
        let pristineCheck = try run(["sh", "-c", "cd '\(pristine)' && sha256sum -c pv-filler.sha256"], allowFailure: true)
        #expect(pristineCheck.status == 0, "pristine/srv reads the runs wrong: \(pristineCheck.output)")
        #expect(FileChecks.stat("\(pristine)/written") == nil)
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
    }

    /// The same volume read through DiskImage's own mapping (PartitionBytes), no device: one range in each of
    /// the two PV partitions, and debugfs, reading the ext4 those bytes make, finds the file that reaches into
    /// the second PV intact. What the dm table is built from, checked on every engine.
    @Test func volumeAcrossTwoPhysicalVolumesMapsBothPartitionsBytes() throws {
        let fixture = try ServeFixture(images: [("two", "lvm-two-pv", [])])
        defer { fixture.close() }
        // In the VM the image is a symlink into the shared cache (FileByteSource follows none).
        let image = try FileByteSource(path: URL(fileURLWithPath: "\(fixture.images)/two.img").resolvingSymlinksInPath().path)
        let table = try PartitionTable.read(image)
        let data = try #require(LVM.volumes(image, table: table).volumes.first { $0.name == "data" })
        let partition = try data.mapping.get()
        let holders = partition.ranges.map { range in
            table.partitions.first { range.offset >= $0.startByte && range.offset + range.length <= $0.startByte + $0.sizeBytes }?.number
        }
        #expect(holders == [2, 3], "\(partition.ranges)")
        let bytes = PartitionBytes(image, partition)
        var copy = Data()
        var offset: UInt64 = 0
        while offset < bytes.size {
            let count = Int(min(1 << 20, bytes.size - offset))
            copy.append(contentsOf: try bytes.read(at: offset, count: count))
            offset += UInt64(count)
        }
        let path = "\(fixture.work)/data.ext4"
        try copy.write(to: URL(fileURLWithPath: path))
        let sum = try run(["sh", "-c", "debugfs -R 'cat /pv-filler' '\(path)' 2>/dev/null | sha256sum"]).output.prefix(64)
        let stored = try run(["sh", "-c", "debugfs -R 'cat /pv-filler.sha256' '\(path)' 2>/dev/null"]).output.prefix(64)
        #expect(stored.count == 64 && sum == stored, "\(sum) against \(stored)")
    }

    /// The same image without device-mapper: the root (one range) is served, /srv (two ranges) is left out
    /// of the sandbox and of pristine/ with a line saying why; diff and rmdir work, nothing is left.
    @Test(.enabled(if: Environment.engine == "overlay", "the dm engine serves it"))
    func dataVolumeAcrossTwoPhysicalVolumesIsLeftOutWithoutDeviceMapper() throws {
        let fixture = try ServeFixture(images: [("two", "lvm-two-pv", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("two", "s")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(sandbox)/which-partition") == "lv root\n")
        #expect(FileChecks.stat("\(sandbox)/srv/which-partition") == nil)
        let reason = "LVM2 logical volume testvg/data, which lies in 2 separate ranges of the image, without device-mapper"
        #expect(fixture.waitForLog { $0.contains("sandbox two/s: partition") && $0.contains("at /srv not shown") && $0.contains(reason) },
                "\(fixture.log.suffix(5))")
        #expect(FileChecks.stat("\(fixture.mountpoint)/two/pristine/which-partition") != nil)
        #expect(FileChecks.stat("\(fixture.mountpoint)/two/pristine/srv/which-partition") == nil)
        #expect(fixture.waitForLog { $0.contains("two/pristine: partition") && $0.contains("at /srv not shown") && $0.contains(reason) },
                "\(fixture.log.suffix(5))")
        try FileChecks.writeFile("\(sandbox)/written", "stays in the sandbox")
        let diff = try ChangeFixture.diff(sandbox).output
        #expect(diff.contains("added /written") && !diff.contains("/srv"), "\(diff)")
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
    }

    @Test func rootOnALogicalVolume() throws {
        let fixture = try ServeFixture(images: [("fedora-like", "lvm-root", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("fedora-like", "s")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(sandbox)/which-partition") == "lv root\n")
        // fstab's /dev/mapper/testvg-data /srv: a second LV, a partition of the sandbox like any other.
        #expect(FileChecks.readFile("\(sandbox)/srv/which-partition") == "lv data\n")
        try FileChecks.writeFile("\(sandbox)/srv/written", "in the data volume's COW")
        try FileChecks.writeFile("\(sandbox)/written", "stays in the sandbox")
        let root = try fixture.status().first?["root"] as? String
        #expect(root == "LVM2 logical volume testvg/root (as partition 1001) (ext4): root=/dev/mapper/testvg-root in cmdline.txt of partition 1")
        let diff = try ChangeFixture.diff(sandbox).output
        #expect(diff.contains("added /srv/written") && diff.contains("added /written"), "\(diff)")
        // Every device scanned (no devices file, no filter), as `vgscan` after an upgrade would.
        let pvs = try run(["pvs", "--noheadings", "-o", "pv_name,vg_name", "--config",
                           "devices{use_devicesfile=0 filter=[\"a|.*|\"] global_filter=[\"a|.*|\"]}"], allowFailure: true)
        #expect(!pvs.output.contains("testvg"), "the host's LVM sees the image's VG: \(pvs.output)")
        // Nor could the host's kernel (loop's max_part) or udev find the partition table and the PV in it: every
        // loop device over the image starts inside a partition, never at its first byte.
        let image = URL(fileURLWithPath: fixture.images + "/fedora-like.img").resolvingSymlinksInPath().path
        let loops = LoopDevice.attached().filter { $0.backingFile == image }
        #expect(!loops.isEmpty)
        for loop in loops {
            let offset = FileChecks.readFile("/sys/block/loop\(loop.index)/loop/offset")
            #expect(offset != nil && offset != "0\n", "loop\(loop.index) shows the whole image (offset \(offset ?? "?"))")
        }
        let mapped = (try? FileManager.default.contentsOfDirectory(atPath: "/dev/mapper")) ?? []
        #expect(!mapped.contains { $0.hasPrefix("testvg-") }, "the image's LVs were activated on the host: \(mapped)")
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
    }

    /// A linear root LV of two segments that are not one run of its PV (lvextend after another LV): without
    /// device-mapper nothing joins the runs, so mkdir is ENOTSUP with one log line saying why, and nothing is
    /// left. (The dm engine serves it: LVMRootSuite.rootVolumeInTwoRuns.)
    @Test(.enabled(if: Environment.engine == "overlay", "the dm engine serves it"))
    func splitLinearVolumeIsENOTSUPWithoutDeviceMapper() throws {
        let fixture = try ServeFixture(images: [("split", "lvm-split", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("split", "s")
        #expect(mkdir(sandbox, 0o755) == -1 && errno == ENOTSUP, "mkdir: \(String(cString: strerror(errno)))")
        let reason = "LVM2 logical volume testvg/root, which lies in 2 separate ranges of the image, without device-mapper"
        #expect(fixture.waitForLog { $0.contains(reason) })
        #expect(fixture.log.filter { $0.contains(reason) }.count == 1, "\(fixture.log.filter { $0.contains(reason) })")
        #expect(FileChecks.stat(sandbox) == nil)
        #expect(fixture.stop() == 0)
    }
}
