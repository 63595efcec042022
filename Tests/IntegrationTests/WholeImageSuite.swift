import Foundation
import Glibc
import Testing

/// The whole image in a sandbox (issue 10): the FAT boot partition at its fstab path, served by the daemon
/// (FATFS over a block COW), isolated per sandbox; `pristine/` read-only. Run natively (overlay) and in the
/// VM (dm, Tools/vm-test).
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct WholeImageSuite {
    static func write(_ path: String, _ text: String, append: Bool = false) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0o644)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return text.withCString { Glibc.write(fd, $0, strlen($0)) } == text.utf8.count
    }

    /// With IMGSANDBOX_DEBUG_FAT_DUMP the daemon writes each FAT partition as the sandbox sees it to a file at
    /// rmdir: fsck.fat -n and mtools (the oracles) then check what FATFS wrote through FUSE.
    @Test(arguments: [("rpi", "/boot/firmware"), ("rpi-boot", "/boot"), ("gpt-efi", "/boot/efi")])
    func bootPartitionInTwoSandboxesAndPristine(kind: String, boot: String) throws {
        let fixture = try ServeFixture(images: [("pi", kind, [])])
        defer { fixture.close() }
        try fixture.start(["--cow-size", "96M"], environment: ["IMGSANDBOX_DEBUG_FAT_DUMP": fixture.work])
        let a = fixture.sandbox("pi", "a"), b = fixture.sandbox("pi", "b")
        let pristine = "\(fixture.mountpoint)/pi/pristine"
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(fixture.mountpoint)/pi").sorted() == ["pristine", "sandboxes"])
        for path in [a, b] { #expect(mkdir(path, 0o755) == 0, "mkdir \(path): \(String(cString: strerror(errno)))") }

        let listing = try FileManager.default.contentsOfDirectory(atPath: a + boot).sorted()
        if kind == "gpt-efi" {
            #expect(listing == ["EFI"])
            #expect(FileChecks.readFile("\(a)\(boot)/EFI/debian/grubx64.efi") == "grub\n")
        } else {
            #expect(listing == ["cmdline.txt", "config.txt"])
        }
        // statfs inside the partition reports FAT's figures, not the root's.
        var fat = statvfs(), root = statvfs()
        #expect(statvfs(a + boot, &fat) == 0 && statvfs(a, &root) == 0)
        #expect(fat.f_blocks != root.f_blocks && fat.f_namemax == 255)

        // Edits in a: config.txt, ssh, userconf.txt, a 20 MiB file.
        let config = "\(a)\(boot)/config.txt"
        #expect(Self.write(config, "dtoverlay=vc4-kms-v3d\n", append: true))
        #expect(Self.write("\(a)\(boot)/ssh", ""))
        #expect(Self.write("\(a)\(boot)/userconf.txt", "pi:$6$salt$hash\n"))
        let big = [UInt8]((0..<(20 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) })
        #expect(FileManager.default.createFile(atPath: "\(a)\(boot)/big.bin", contents: Data(big)))
        #expect(FileManager.default.contents(atPath: "\(a)\(boot)/big.bin") == Data(big))
        // b edits differently; a fresh view of each shows only its own.
        #expect(Self.write("\(b)\(boot)/config.txt", "b-only\n"))
        #expect(FileChecks.readFile("\(b)\(boot)/config.txt") == "b-only\n")
        #expect(!FileManager.default.fileExists(atPath: "\(b)\(boot)/ssh"))
        #expect(!FileManager.default.fileExists(atPath: "\(b)\(boot)/big.bin"))
        #expect(FileChecks.readFile(config)?.hasSuffix("dtoverlay=vc4-kms-v3d\n") == true)
        #expect(FileManager.default.fileExists(atPath: "\(a)\(boot)/ssh"))

        // Across the partition boundary: EXDEV, as between kernel mounts; the mount point cannot be removed.
        #expect(rename("\(a)\(boot)/ssh", "\(a)/ssh") == -1 && errno == EXDEV)
        #expect(link("\(a)/etc/hostname", "\(a)\(boot)/hostname") == -1 && errno == EXDEV)
        #expect(rmdir(a + boot) == -1 && errno == EBUSY)

        // pristine/: the original, every write refused.
        if kind != "gpt-efi" {
            #expect(FileChecks.readFile("\(pristine)\(boot)/config.txt") == "arm_64bit=1\nenable_uart=1\n")
        }
        #expect(!FileManager.default.fileExists(atPath: "\(pristine)\(boot)/ssh"))
        #expect(FileChecks.readFile("\(pristine)/etc/hostname") == "raspberrypi\n")
        for path in ["\(pristine)\(boot)/new", "\(pristine)/etc/new"] {
            #expect(open(path, O_WRONLY | O_CREAT, 0o644) == -1 && errno == EROFS, "\(path)")
        }
        #expect(mkdir("\(pristine)\(boot)/d", 0o755) == -1 && errno == EROFS)
        #expect(unlink("\(pristine)/etc/hostname") == -1 && errno == EROFS)

        // status: the partition with its mount point, filesystem and COW use.
        let rows = try fixture.status()
        let partitions = rows.first { $0["sandbox"] as? String == "a" }?["partitions"] as? [[String: Any]] ?? []
        #expect(partitions.count == 1)
        #expect(partitions.first?["mount_point"] as? String == boot)
        #expect(partitions.first?["filesystem"] as? String == "vfat")
        #expect(((partitions.first?["cow_used_bytes"] as? NSNumber)?.uint64Value ?? 0) >= 20 << 20)

        for path in [a, b] { #expect(rmdir(path) == 0, "rmdir \(path): \(String(cString: strerror(errno)))") }

        // The FAT volume sandbox a left behind is sound and holds exactly what was written.
        let dump = "\(fixture.work)/pi-a-p1.img"
        let fsck = try run(["fsck.fat", "-n", dump], allowFailure: true)
        #expect(fsck.status == 0, "fsck.fat -n: \(fsck.output)")
        let mtools = ["env", "MTOOLS_SKIP_CHECK=1"]
        let dir = try run(mtools + ["mdir", "-b", "-i", dump, "::"]).output
        for name in ["ssh", "userconf.txt", "big.bin"] { #expect(dir.contains("::/\(name)"), "mdir: \(dir)") }
        if kind != "gpt-efi" {
            #expect(try run(mtools + ["mtype", "-i", dump, "::config.txt"]).output == "arm_64bit=1\nenable_uart=1\ndtoverlay=vc4-kms-v3d\n")
        }
        let copied = "\(fixture.work)/big.copy"
        _ = try run(mtools + ["mcopy", "-n", "-i", dump, "::big.bin", copied])
        #expect(FileManager.default.contents(atPath: copied) == Data(big))
        #expect(try run(mtools + ["mtype", "-i", dump, "::userconf.txt"]).output == "pi:$6$salt$hash\n")
        unlink(dump)
        unlink(copied)
        unlink("\(fixture.work)/pi-b-p1.img")
    }

    /// A separate ext4 /home: its own COW through the engine (a second overlay or snapshot), isolated per
    /// sandbox, read-only in pristine/, EXDEV across the boundary, listed by status.
    @Test func linuxHomePartition() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi-home", [])])
        defer { fixture.close() }
        try fixture.start(["--cow-size", "64M"])
        let a = fixture.sandbox("pi", "a"), b = fixture.sandbox("pi", "b")
        let pristine = "\(fixture.mountpoint)/pi/pristine"
        for path in [a, b] { #expect(mkdir(path, 0o755) == 0, "mkdir \(path): \(String(cString: strerror(errno)))") }
        #expect(FileChecks.readFile("\(a)/home/pi/where.txt") == "on the home partition\n")
        #expect(Self.write("\(a)/home/pi/where.txt", "changed in a\n"))
        #expect(Self.write("\(a)/home/pi/new.txt", "new in a\n"))
        #expect(FileChecks.readFile("\(b)/home/pi/where.txt") == "on the home partition\n")
        #expect(!FileManager.default.fileExists(atPath: "\(b)/home/pi/new.txt"))
        #expect(FileChecks.readFile("\(pristine)/home/pi/where.txt") == "on the home partition\n")
        #expect(open("\(pristine)/home/pi/x", O_WRONLY | O_CREAT, 0o644) == -1 && errno == EROFS)
        #expect(rename("\(a)/home/pi/new.txt", "\(a)/etc/new.txt") == -1 && errno == EXDEV)
        #expect(link("\(a)/home/pi/new.txt", "\(a)/new.txt") == -1 && errno == EXDEV)
        #expect(rmdir("\(a)/home") == -1 && errno == EBUSY)
        // statfs in /home is /home's own filesystem: 8 MiB written there leave the root's free space alone.
        func free(_ path: String) -> UInt64 {
            var st = statvfs()
            return statvfs(path, &st) == 0 ? UInt64(st.f_bfree) * UInt64(st.f_frsize) : 0
        }
        let (homeBefore, rootBefore) = (free("\(a)/home"), free(a))
        #expect(FileManager.default.createFile(atPath: "\(a)/home/pi/blob", contents: Data(repeating: 7, count: 8 << 20)))
        let fd = open("\(a)/home/pi/blob", O_RDONLY)
        #expect(fd >= 0 && fsync(fd) == 0)
        close(fd)
        #expect(homeBefore - free("\(a)/home") >= 8 << 20)
        #expect(rootBefore - min(rootBefore, free(a)) < 4 << 20)
        let rows = try fixture.status()
        let partitions = rows.first { $0["sandbox"] as? String == "a" }?["partitions"] as? [[String: Any]] ?? []
        // Parents first, then by path: /home (one component) before /boot/firmware.
        #expect(partitions.map { $0["mount_point"] as? String } == ["/home", "/boot/firmware"])
        #expect(partitions.first?["filesystem"] as? String == "ext4")
        #expect(((partitions.first?["cow_used_bytes"] as? NSNumber)?.uint64Value ?? 0) >= 8 << 20)
        for path in [a, b] { #expect(rmdir(path) == 0, "rmdir \(path): \(String(cString: strerror(errno)))") }
    }
}
