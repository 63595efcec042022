import Glibc
import Testing
@testable import DiskImage

@Suite("Boot configuration: the root= an image's kernel command line names")
struct BootConfigurationTests {
    func root(_ text: String, _ kind: BootFileKind) throws -> KernelRoot? {
        try BootConfiguration.root(in: Array(text.utf8), kind: kind, file: "f")
    }

    @Test func raspberryPiCmdline() throws {
        let r = try root("console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait\n", .cmdline)
        #expect(r == KernelRoot(value: "PARTUUID=6c586e13-02", filesystemType: "ext4", file: "f"))
        #expect(r?.spec == .partUUID("6c586e13-02"))
    }

    @Test func lastRootWinsAndQuotesGroup() throws {
        let r = try root("root=/dev/sda1 \"root=LABEL=my root\" rootflags=compress=zstd,subvol=root", .cmdline)
        #expect(r?.value == "LABEL=my root")
        #expect(r?.rootflags == "compress=zstd,subvol=root")
        #expect(r?.subvolume == .success(.path("root")))
        #expect(try root("root=UUID=x rootflags=subvolid=257,compress=zstd", .cmdline)?.subvolume == .success(.id(257)))
        #expect(try root("console=tty1 quiet", .cmdline) == nil)
        #expect(try root("root= quiet", .cmdline) == nil)
    }

    @Test func extlinuxDefaultLabel() throws {
        let conf = """
        # Generated file, all changes will be lost on nixos-rebuild!
        DEFAULT nixos-default
        MENU TITLE ------------------------------------------------------------
        TIMEOUT 50

        LABEL nixos-old
          MENU LABEL NixOS - old
          LINUX ../nixos/old-Image
          APPEND init=/nix/store/old/init root=LABEL=OLD loglevel=4

        LABEL nixos-default
          MENU LABEL NixOS - Default
          LINUX ../nixos/abc-Image
          APPEND init=/nix/store/abc/init root=UUID=44444444-4444-4444-8888-888888888888 loglevel=4
          FDTDIR ../nixos/abc-dtbs
        """
        #expect(try root(conf, .extlinux)?.spec == .uuid("44444444-4444-4444-8888-888888888888"))
        // Without DEFAULT: the label marked MENU DEFAULT, else the first; a global APPEND when a label has none.
        #expect(try root("label a\n append root=/dev/mmcblk0p2\nlabel b\n menu default\n append root=/dev/mmcblk0p3\n", .extlinux)?.value == "/dev/mmcblk0p3")
        #expect(try root("APPEND root=PARTLABEL=rootfs\nLABEL only\n  KERNEL /Image\n", .extlinux)?.spec == .partLabel("rootfs"))
    }

    @Test func grubDefaultMenuentry() throws {
        let cfg = """
        set default="1"
        if [ -s $prefix/grubenv ]; then
          load_env
        fi
        menuentry 'Debian GNU/Linux' --class debian {
            linux /boot/vmlinuz-6.1.0 root=PARTUUID=aaaa-01 ro quiet
        }
        menuentry "Debian (rescue)" {
            linux16 /boot/vmlinuz-6.1.0 root=UUID=bbbbbbbb-0000-0000-0000-000000000000 ro single
        }
        submenu 'Advanced' {
            menuentry 'inner' { linux /vmlinuz root=/dev/sda9 }
        }
        """
        #expect(try root(cfg, .grub)?.spec == .uuid("bbbbbbbb-0000-0000-0000-000000000000"))
        #expect(try root(cfg.replacingFirst("set default=\"1\"", with: "set default=\"Debian GNU/Linux\""), .grub)?.value == "PARTUUID=aaaa-01")
        #expect(try root(cfg.replacingFirst("set default=\"1\"", with: ""), .grub)?.value == "PARTUUID=aaaa-01")
    }

    @Test func ubootEnvironments() throws {
        let armbian = "verbosity=1\nbootlogo=false\nrootdev=UUID=0c0ffee0-1111-2222-3333-444444444444\nrootfstype=btrfs\nrootflags=subvol=@\n"
        #expect(try root(armbian, .armbianEnv) == KernelRoot(value: "UUID=0c0ffee0-1111-2222-3333-444444444444", rootflags: "subvol=@",
                                                           filesystemType: "btrfs", file: "f"))
        #expect(try root("bootargs=console=ttyS0,115200 root=/dev/mmcblk0p2 rw rootwait\n", .uEnv)?.spec == .partitionNumber(2))
        #expect(try root("root=LABEL=writable\n", .uEnv)?.spec == .label("writable"))
        #expect(try root("# rootdev=/dev/sda1\nfdtfile=x.dtb\n", .uEnv) == nil)
    }

    /// HAOS's boot script: slot A's arguments come first.
    static let haosScript = """
    # Set bootargs
    setenv bootargs_hassos "zram.enabled=1 zram.num_devices=3 fsck.repair=yes"
    setenv bootargs_a "root=PARTUUID=8d3d53e3-6d49-4c38-8349-aff6859e82fd rootfstype=erofs ro"
    setenv bootargs_b "root=PARTUUID=a3ec664e-32ce-4665-95ea-7ae90ce9aa20 rootfstype=erofs ro"
    """

    @Test func bootScriptPlainText() throws {
        let r = try root(Self.haosScript, .bootScript)
        #expect(r?.spec == .partUUID("8d3d53e3-6d49-4c38-8349-aff6859e82fd"))
        #expect(r?.filesystemType == "erofs")
    }

    @Test(.enabled(if: programExists("mkimage"), "needs mkimage (u-boot-tools)"))
    func bootScriptCompiledByMkimage() throws {
        let dir = ScratchDirectory()
        let txt = dir.path + "/boot.cmd", scr = dir.path + "/boot.scr"
        let f = fopen(txt, "w")
        fputs(Self.haosScript + "\n", f)
        fclose(f)
        #expect(run(["mkimage", "-A", "arm", "-O", "linux", "-T", "script", "-C", "none", "-d", txt, scr]) == 0)
        let bytes = try FileByteSource(path: scr).readAll()
        #expect(bytes.be32(0) == 0x2705_1956)
        let r = try BootConfiguration.root(in: bytes, kind: .bootScript, file: "boot.scr")
        #expect(r?.value == "PARTUUID=8d3d53e3-6d49-4c38-8349-aff6859e82fd")
    }

    // MARK: Hostile input

    @Test func megabyteOfGarbageIsRefusedUnread() {
        var garbage = [UInt8](repeating: 0, count: 1 << 20)
        var state: UInt32 = 12345
        for i in garbage.indices { state = state &* 1_103_515_245 &+ 12345; garbage[i] = UInt8(truncatingIfNeeded: state >> 16) }
        #expect(throws: BootConfigurationError.tooLarge(file: "cmdline.txt", bytes: 1 << 20, limit: BootConfiguration.maxBytes)) {
            try BootConfiguration.root(in: garbage, kind: .cmdline, file: "cmdline.txt")
        }
    }

    @Test(arguments: BootFileKind.allCases)
    func binaryIsNotText(kind: BootFileKind) {
        let bytes = Array("root=/dev/sda2 ".utf8) + [0x01, 0x02] + Array(" quiet".utf8)
        #expect(throws: BootConfigurationError.notText(file: "x", offset: 15)) {
            try BootConfiguration.root(in: bytes, kind: kind, file: "x")
        }
    }

    @Test func endlessBracesAndQuotesStayBounded() throws {
        let text = String(repeating: "menuentry x { { \" ", count: 10_000)
        #expect(try root(text, .grub) == nil)
        #expect(try root(String(repeating: "\"", count: 100_000), .cmdline) == nil)
        #expect(try root(String(repeating: "LABEL a\n", count: 20_000), .extlinux) == nil)
    }
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = firstRange(of: target) else { return self }
        var copy = self
        copy.replaceSubrange(range, with: replacement)
        return copy
    }
}
