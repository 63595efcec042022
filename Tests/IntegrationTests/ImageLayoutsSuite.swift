import Foundation
import Glibc
import Testing

/// Issue 25's all-layouts suite: one folder holding every image builder's layout (Tools/make-test-image's
/// kinds) as it is downloaded (zipped, compressed, qcow2; each built once), and for each: the directory
/// is there, mkdir gives the OS root, every fstab (or boot) partition is at its path, a write stays in
/// its sandbox, diff lists it, save gives an image fsck accepts that, served again, holds the change
/// (where save applies), run works (the roots carry a static busybox; NixOS has no shell before its
/// first boot), rmdir leaves nothing, and no image file changes. Prints each layout's first mkdir (cold
/// cache) and second: the figures of docs/IMAGES.md's table. A new layout is one row.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct ImageLayoutsSuite {
    struct Layout {
        let name: String
        /// make-test-image's kind.
        let kind: String
        /// The file in IMAGES_DIR, as the builder ships it.
        let file: String
        /// Shell, run in the work folder: from $IMG (the raw image) to $OUT (IMAGES_DIR/file).
        let ship: String
        /// A file of the root the image boots, and its text.
        let root: (path: String, text: String)
        /// Files on the other partitions (fstab's, or the boot partition the root's empty directory shows;
    /// HAOS mounts its other partitions by systemd units under /mnt, which the sandbox does not show).
        let mounts: [String]
        /// Where the saved image's root is, for e2fsck; nil where save does not apply.
        let savedRoot: SavedRoot?
        /// Whether the root has a shell for run (the suite's static busybox, or the image's own).
        let runs: Bool
        var size = "160M"
        /// What `run` prints of `cat /etc/imgsandbox-layout; uname -m` (the image's own programs for armhf).
        var ran: String? = nil
    }

    enum SavedRoot {
        /// sfdisk's index of the root partition, and its checker (squashfs and erofs roots are made anew by save).
        case partition(Int, checker: [String] = ["e2fsck", "-fn"])
        /// A logical volume: MiB offset and size inside partition `index`.
        case volume(partition: Int, offsetMiB: Int, sizeMiB: Int)
    }

    static let layouts: [Layout] = [
        Layout(name: "raspios", kind: "rpi", file: "raspios.img.xz", ship: "xz -T2 --block-size=8MiB -3 -c $IMG > $OUT",
               root: ("/etc/imgsandbox-layout", "rpi\n"), mounts: ["/boot/firmware/config.txt"], savedRoot: .partition(1), runs: true),
        Layout(name: "raspbian", kind: "raspbian-2019", file: "raspbian.zip",
               ship: "mv $IMG 2019-09-26-raspbian-buster-lite.img && zip -q -1 $OUT 2019-09-26-raspbian-buster-lite.img",
               root: ("/etc/imgsandbox-layout", "raspbian-2019\n"), mounts: ["/boot/cmdline.txt"], savedRoot: .partition(1), runs: true),
        Layout(name: "yocto", kind: "extended-root", file: "yocto.wic.bz2", ship: "bzip2 -1 -c $IMG > $OUT",
               root: ("/which-partition", "p5 root\n"), mounts: ["/boot/cmdline.txt"], savedRoot: .partition(4), runs: true),
        Layout(name: "haos", kind: "haos-like", file: "haos.qcow2.xz",
               ship: "qemu-img convert -f raw -O qcow2 $IMG haos.qcow2 && xz -T2 -3 -c haos.qcow2 > $OUT",
               root: ("/which-partition", "system0\n"), mounts: [], savedRoot: .partition(1, checker: ["fsck.erofs"]), runs: true),
        Layout(name: "openwrt", kind: "openwrt-ext4", file: "openwrt.img.gz",
               ship: #"gzip -1 -c $IMG > $OUT && printf '{"metadata_version":"1.1","supported_devices":["rpi-4"]}FWx0\0\0\0\x58' >> $OUT"#,
               root: ("/etc/imgsandbox-layout", "openwrt-ext4\n"), mounts: ["/boot/cmdline.txt"], savedRoot: .partition(1), runs: true),
        Layout(name: "openwrt-squashfs", kind: "openwrt-like", file: "openwrt-squashfs.img.gz",
               ship: #"gzip -1 -c $IMG > $OUT && printf '{"metadata_version":"1.1","supported_devices":["rpi-4"]}FWx0\0\0\0\x58' >> $OUT"#,
               root: ("/which-partition", "p2 squashfs root\n"), mounts: ["/boot/cmdline.txt"],
               savedRoot: .partition(1, checker: ["unsquashfs", "-l"]), runs: true),
        // A read-only application partition (squashfs at /opt by fstab), as Yocto builds them.
        Layout(name: "appliance", kind: "rpi-squashfs-opt", file: "appliance.wic.xz", ship: "xz -T2 -3 -c $IMG > $OUT",
               root: ("/which-partition", "p2 root\n"), mounts: ["/boot/firmware/cmdline.txt", "/opt/which-partition"],
               savedRoot: .partition(1), runs: true, size: "256M"),
        Layout(name: "armbian", kind: "armbian-like", file: "armbian.img.xz", ship: "xz -T2 -3 -c $IMG > $OUT",
               root: ("/etc/imgsandbox-layout", "armbian-like\n"), mounts: [], savedRoot: .partition(0), runs: true),
        Layout(name: "ubuntu", kind: "ubuntu-like", file: "ubuntu.img.xz", ship: "xz -T2 -3 -c $IMG > $OUT",
               root: ("/etc/imgsandbox-layout", "ubuntu-like\n"), mounts: ["/boot/firmware/cmdline.txt"], savedRoot: .partition(1), runs: true),
        Layout(name: "nixos", kind: "nixos-like", file: "nixos.img.zst", ship: "zstd -q -3 -c $IMG > $OUT",
               root: ("/etc/imgsandbox-layout", "nixos-like\n"), mounts: ["/boot/firmware/config.txt"], savedRoot: .partition(1), runs: false),
        Layout(name: "debian", kind: "debian-cloud", file: "debian.qcow2", ship: "qemu-img convert -f raw -O qcow2 $IMG $OUT",
               root: ("/etc/imgsandbox-layout", "debian-cloud\n"), mounts: ["/boot/efi/EFI/debian/grubx64.efi"], savedRoot: .partition(0), runs: true),
        // Fedora Workstation/ARM: btrfs subvolumes root and home, ext4 /boot with BLS entries, EFI at /boot/efi.
        Layout(name: "fedora", kind: "fedora-like", file: "fedora.raw.xz", ship: "xz -T2 -3 -c $IMG > $OUT",
               root: ("/etc/hostname", "fedora-like\n"),
               mounts: ["/home/pi/where.txt", "/boot/grub2/grub.cfg", "/boot/efi/EFI/fedora/grub.cfg"],
               savedRoot: .partition(2, checker: ["btrfs", "check", "--readonly"]), runs: true, size: "256M"),
        // Fedora Server's root on LVM (testvg/root, 48 MiB at the PV's 1 MiB data offset in partition 2).
        Layout(name: "fedora-server", kind: "lvm-root", file: "fedora-server.raw.xz", ship: "xz -T2 -3 -c $IMG > $OUT",
               root: ("/which-partition", "lv root\n"), mounts: ["/srv/which-partition"],
               savedRoot: .volume(partition: 1, offsetMiB: 1, sizeMiB: 48), runs: true, size: "256M"),
        // balenaOS: no root= anywhere (U-Boot's default resin_root_part 2 = resin-rootA; both roots' fstab say
        // /dev/root, so slot A); state and data logical partitions (data the largest) under /mnt by systemd units.
        Layout(name: "balena", kind: "balena-like", file: "balena.zip",
               ship: "mv $IMG balena-cloud-raspberrypi4-64-6.0.13-v16.4.img && zip -q -1 $OUT balena-cloud-raspberrypi4-64-6.0.13-v16.4.img",
               root: ("/which-partition", "resin-rootA\n"), mounts: [], savedRoot: .partition(1), runs: true),
        // DietPi (older releases as .7z): a trailing 1 MiB FAT DIETPISETUP beside the boot FAT.
        Layout(name: "dietpi", kind: "dietpi-like", file: "dietpi.7z",
               ship: "mv $IMG DietPi_RPi-ARMv8-Bookworm.img && 7z a -bd -mx=1 $OUT DietPi_RPi-ARMv8-Bookworm.img >/dev/null",
               root: ("/etc/imgsandbox-layout", "dietpi-like\n"), mounts: ["/boot/firmware/cmdline.txt"], savedRoot: .partition(1), runs: true),
        Layout(name: "kali", kind: "kali-like", file: "kali.img.xz", ship: "xz -T2 -3 -c $IMG > $OUT",
               root: ("/etc/imgsandbox-layout", "kali-like\n"), mounts: ["/boot/cmdline.txt"], savedRoot: .partition(1), runs: true),
        // rpi-image-gen A/B, as it writes it (.img): autoboot.txt boots boot_a, fstab's by-slot links pick system_a.
        Layout(name: "rpi-ab", kind: "rpi-ab", file: "rpi-ab.img", ship: "mv $IMG $OUT",
               root: ("/which-partition", "system_a\n"), mounts: ["/boot/firmware/boot.img"], savedRoot: .partition(3), runs: true),
        // Debian armhf (debootstrap, cached by make-test-image): run through qemu-user's binfmt handler.
        Layout(name: "armhf", kind: "armhf", file: "armhf.img.zst", ship: "zstd -q -T2 -3 -c $IMG > $OUT",
               root: ("/etc/hostname", "armhf-test\n"), mounts: ["/boot/config.txt"], savedRoot: .partition(1), runs: true, size: "1G",
               ran: "armv7l\n"),
    ]

    static let written = "/imgsandbox-layouts-wrote"

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/bin/busybox"), "needs busybox-static"))
    func everyLayoutAsDownloaded() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        let shell = try RunSuite.busyboxTree(in: fixture.work, name: "shell")
        let built = ContinuousClock.now
        let emulatesArm = FileManager.default.fileExists(atPath: "/proc/sys/fs/binfmt_misc/qemu-arm")
        if !emulatesArm { print("ImageLayoutsSuite: no armhf row (no qemu-arm binfmt handler: Tools/install-deps registers qemu-user-static)") }
        let environment = ProcessInfo.processInfo.environment
        // IMGSANDBOX_TEST_LAYOUTS=name,name,...: only those rows (vm-test's dm run: the layouts whose path differs there).
        let chosen = environment["IMGSANDBOX_TEST_LAYOUTS"].map { Set($0.split(separator: ",").map(String.init)) }
        let layouts = Self.layouts.filter { ($0.kind != "armhf" || emulatesArm) && chosen?.contains($0.name) != false }
        // vm-test builds the files on the host (IMGSANDBOX_TEST_LAYOUTS_PREPARE=DIR: into DIR, then stop) and the VM
        // takes them from there (IMGSANDBOX_TEST_LAYOUT_FILES=DIR): emulated, six rows took 230 s to build.
        let prepare = environment["IMGSANDBOX_TEST_LAYOUTS_PREPARE"], prebuilt = environment["IMGSANDBOX_TEST_LAYOUT_FILES"]
        var buildTimes: [String: Duration] = [:]
        for layout in layouts {
            let started = ContinuousClock.now
            defer { buildTimes[layout.name] = started.duration(to: .now) }
            let shipped = (prepare ?? fixture.images) + "/" + layout.file
            if let prebuilt, FileManager.default.fileExists(atPath: prebuilt + "/" + layout.file) {
                try run(["cp", "--sparse=always", prebuilt + "/" + layout.file, shipped])
            } else {
                let image = "\(fixture.work)/\(layout.name).img"
                try run([Paths.makeTestImage, layout.kind, image, "--size", layout.size] + (layout.runs ? ["--extra", shell] : []))
                try run(["sh", "-c", "cd '\(fixture.work)' && IMG='\(image)' OUT='\(shipped)' && \(layout.ship) && rm -f \"$IMG\""])
            }
            if prepare == nil { fixture.checksums[shipped] = try fixture.fingerprint(shipped) }
        }
        print("ImageLayoutsSuite: \(layouts.count) images built in \(built.duration(to: .now))")
        if prepare != nil { return }
        try fixture.start(["--cache-dir", fixture.work + "/cache"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint).sorted() == layouts.map(\.name).sorted())

        var figures: [String] = []
        for layout in layouts {
            let started = ContinuousClock.now
            let figure = try Self.check(layout, fixture)
            figures.append("\(figure) (built in \(Self.milliseconds(buildTimes[layout.name] ?? .zero)) ms, checked in \(Self.milliseconds(started.duration(to: .now))) ms)")
        }
        #expect(!fixture.log.contains { $0.contains("not shown at") }, "every fstab partition is shown")
        print("ImageLayoutsSuite (160 MiB images, LVM and squashfs /opt 256 MiB, OpenWrt squashfs 56 MiB, armhf 1 GiB, --engine \(Environment.engine); first mkdir with a cold cache, second):\n  "
              + figures.joined(separator: "\n  "))
        HostileInputSuite.stopAndDrain(fixture)
    }

    /// Every check of one layout; returns its mkdir times.
    static func check(_ layout: Layout, _ fixture: ServeFixture) throws -> String {
        let what = "\(layout.file) (\(layout.kind))"
        #expect(FileManager.default.fileExists(atPath: "\(fixture.mountpoint)/\(layout.name)/sandboxes"), "\(what): its directory")
        let sandbox = fixture.sandbox(layout.name, "s"), second = fixture.sandbox(layout.name, "second")
        let cold = ContinuousClock.now
        try #require(CompressedImageSuite.mkdirErrno(sandbox) == 0, "\(what): mkdir")
        let coldTime = cold.duration(to: .now)
        let warm = ContinuousClock.now
        try #require(CompressedImageSuite.mkdirErrno(second) == 0, "\(what): second mkdir")
        let warmTime = warm.duration(to: .now)

        #expect(FileChecks.readFile(sandbox + layout.root.path) == layout.root.text, "\(what): the root it boots")
        for path in layout.mounts {
            #expect(FileChecks.readFile(sandbox + path) != nil, "\(what): \(path) on its partition")
        }
        try FileChecks.writeFile(sandbox + written, "written in \(layout.name)\n")
        #expect(FileChecks.readFile(sandbox + written) == "written in \(layout.name)\n", "\(what): the write")
        #expect(access(second + written, F_OK) != 0, "\(what): the write stays in its sandbox")
        #expect(rmdir(second) == 0)
        let diff = try ChangeFixture.diff(sandbox)
        #expect(diff.status == 0 && diff.output.split(separator: "\n").contains("added \(written)"), "\(what): diff: \(diff.output)")

        if let savedRoot = layout.savedRoot {
            let output = "\(fixture.work)/\(layout.name)-saved.img"
            let saved = try run([Paths.binary, "save", "--quiet", sandbox, output], allowFailure: true)
            #expect(saved.status == 0, "\(what): save: \(saved.output)")
            if saved.status == 0 {
                #expect(try fsckRoot(output, savedRoot, work: fixture.work), "\(what): e2fsck of the saved root")
                // Served again: the saved image's sandbox holds the change.
                let again = "\(layout.name)-saved"
                #expect(rename(output, "\(fixture.images)/\(again).img") == 0)
                let copy = fixture.sandbox(again, "c")
                #expect(CompressedImageSuite.mkdirErrno(copy) == 0, "\(what): mkdir of the saved image")
                #expect(FileChecks.readFile(copy + written) == "written in \(layout.name)\n", "\(what): the saved image holds the change")
                #expect(FileChecks.readFile(copy + layout.root.path) == layout.root.text, "\(what): the saved image boots the same root")
                #expect(rmdir(copy) == 0)
                #expect(unlink("\(fixture.images)/\(again).img") == 0)
            }
            unlink(output)
        }
        if layout.runs {
            let ran = try RunSuite.run(sandbox, ["sh", "-c", "cat /etc/imgsandbox-layout 2>/dev/null; uname -m; echo ran > /tmp/ran"])
            let host = layout.ran == nil ? (try run(["uname", "-m"]).output) : ""
            #expect(ran == (0, layout.ran ?? "\(layout.kind)\n\(host)"), "\(what): run: \(ran)")
            #expect(FileChecks.readFile(sandbox + "/tmp/ran") == "ran\n", "\(what): run's write is in the sandbox")
        }
        #expect(rmdir(sandbox) == 0, "\(what): rmdir")
        #expect(HostileInputSuite.residue(fixture).isEmpty, "\(what) left \(HostileInputSuite.residue(fixture))")
        return "\(layout.file) (\(layout.kind)): \(milliseconds(coldTime)) ms, \(milliseconds(warmTime)) ms"
    }

    /// e2fsck -fn of the saved image's root (partition or logical volume), copied out.
    static func fsckRoot(_ image: String, _ root: SavedRoot, work: String) throws -> Bool {
        switch root {
        case .partition(let index, let checker):
            return try SaveChecks.fsck(image, work: work, partition: index, checker)
        case .volume(let index, let offset, let size):
            let part = try SaveChecks.extractPartition(image, work: work, index: index)
            defer { unlink(part) }
            let volume = work + "/volume.img"
            defer { unlink(volume) }
            try run(["dd", "if=\(part)", "of=\(volume)", "bs=1M", "skip=\(offset)", "count=\(size)", "conv=sparse", "status=none"])
            let check = try run(["e2fsck", "-fn", volume], allowFailure: true)
            if check.status != 0 { print(check.output) }
            return check.status == 0
        }
    }

    static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
