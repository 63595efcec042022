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

    /// The FAT partition as the sandbox holds it is checked by the oracles through `imgsandbox save`: the saved
    /// image's boot partition (FATFS's writes, replayed from the sandbox's volume) gets fsck.fat -n and mtools;
    /// where the kernel has vfat (the VM), the kernel's own driver mounts it and must show exactly the bytes
    /// the sandbox shows through FUSE.
    @Test(arguments: [("rpi", "/boot/firmware"), ("rpi-boot", "/boot"), ("gpt-efi", "/boot/efi")])
    func bootPartitionInTwoSandboxesAndPristine(kind: String, boot: String) throws {
        let fixture = try ServeFixture(images: [("pi", kind, [])])
        defer { fixture.close() }
        try fixture.start(["--cow-size", "96M"])
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
        let big = Self.big
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

        // The kernel forgetting its dentries and inodes (memory pressure; here drop_caches, slab only) leaves
        // the mount point covered: an overlay of two filesystems renumbers a directory whose inode was evicted.
        #expect(Self.write("/proc/sys/vm/drop_caches", "2\n"))
        #expect(FileManager.default.fileExists(atPath: "\(a)\(boot)/ssh"), "the partition after drop_caches")
        #expect(FileManager.default.fileExists(atPath: "\(pristine)\(boot)/\(kind == "gpt-efi" ? "EFI" : "config.txt")"))

        // Inode numbers: the partition's are its own (none equal to one of the root's, none shared inside it),
        // so cp -a and tar see no false hard links across the boundary.
        for tree in [a, pristine] {
            let all = try run(["find", tree, "-printf", "%i %p\\n"]).output.split(separator: "\n").map { $0.split(separator: " ", maxSplits: 1) }
            let inside = all.filter { $0.count == 2 && ($0[1] == tree + boot || $0[1].hasPrefix(tree + boot + "/")) }.map { String($0[0]) }
            let outside = Set(all.filter { $0.count == 2 && !($0[1] == tree + boot || $0[1].hasPrefix(tree + boot + "/")) }.map { String($0[0]) })
            #expect(Set(inside).count == inside.count, "inode numbers shared inside \(tree)\(boot)")
            #expect(outside.isDisjoint(with: inside), "inode numbers of \(tree)\(boot) also used outside it")
        }

        // status: the partition with its mount point, filesystem and COW use.
        let rows = try fixture.status()
        let partitions = rows.first { $0["sandbox"] as? String == "a" }?["partitions"] as? [[String: Any]] ?? []
        #expect(partitions.count == 1)
        #expect(partitions.first?["mount_point"] as? String == boot)
        #expect(partitions.first?["filesystem"] as? String == "vfat")
        #expect(((partitions.first?["cow_used_bytes"] as? NSNumber)?.uint64Value ?? 0) >= 20 << 20)

        // The FAT volume of sandbox a, saved: sound, and exactly what was written.
        let saved = "\(fixture.work)/a-saved.img"
        defer { unlink(saved) }
        let save = try run([Paths.binary, "save", "--quiet", a, saved], allowFailure: true)
        #expect(save.status == 0, "save: \(save.output)")
        if save.status == 0 { try Self.expectSavedBoot(saved, kind: kind, big: big, sandboxBoot: a + boot, work: fixture.work) }

        for path in [a, b] { #expect(rmdir(path) == 0, "rmdir \(path): \(String(cString: strerror(errno)))") }
    }

    /// The boot partition of a saved image: fsck.fat -n clean, mtools reads what was written, and where the
    /// kernel has vfat, its driver shows what the sandbox shows.
    /// 20 MiB of FileChecks.pattern, made once for every case: a per-byte `map` took 2.7 s of the debug
    /// build natively each time, and tens of seconds under the VM's emulation.
    static let big: [UInt8] = (0..<20).reduce(into: []) { bytes, mebibyte in bytes += FileChecks.pattern(mebibyte: mebibyte, seed: 20) }

    static func expectSavedBoot(_ saved: String, kind: String, big: [UInt8], sandboxBoot: String, work: String) throws {
        let part = try SaveChecks.extractPartition(saved, work: work, index: 0)
        defer { unlink(part) }
        let fsck = try run(["fsck.fat", "-n", part], allowFailure: true)
        #expect(fsck.status == 0, "fsck.fat -n: \(fsck.output)")
        let mtools = ["env", "MTOOLS_SKIP_CHECK=1"]
        let dir = try run(mtools + ["mdir", "-b", "-i", part, "::"]).output
        for name in ["ssh", "userconf.txt", "big.bin"] { #expect(dir.contains("::/\(name)"), "mdir: \(dir)") }
        if kind != "gpt-efi" {
            #expect(try run(mtools + ["mtype", "-i", part, "::config.txt"]).output == "arm_64bit=1\nenable_uart=1\ndtoverlay=vc4-kms-v3d\n")
        }
        let copied = "\(work)/big.copy"
        defer { unlink(copied) }
        _ = try run(mtools + ["mcopy", "-n", "-i", part, "::big.bin", copied])
        #expect(FileManager.default.contents(atPath: copied) == Data(big))
        #expect(try run(mtools + ["mtype", "-i", part, "::userconf.txt"]).output == "pi:$6$salt$hash\n")
        if Self.kernelHasVfat {
            try Self.expectKernelVfatShows(part, sameAs: sandboxBoot, work: work)
        } else {
            print("WholeImageSuite: no vfat in this kernel: the saved boot partition was not mounted by the kernel")
        }
    }

    static var kernelHasVfat: Bool {
        ((try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8)) ?? "").split(separator: "\n").contains { $0.hasSuffix("\tvfat") }
    }

    /// Mounts `part` with the kernel's vfat (read-only, loop; autoclear frees the loop device at unmount) and
    /// expects the same names, types and bytes as `dir` (the sandbox's partition through FUSE).
    static func expectKernelVfatShows(_ part: String, sameAs dir: String, work: String) throws {
        let mnt = "\(work)/vfat-mnt"
        #expect(mkdir(mnt, 0o700) == 0)
        defer { rmdir(mnt) }
        let mounted = try run(["mount", "-t", "vfat", "-o", "ro,loop", part, mnt], allowFailure: true)
        try #require(mounted.status == 0, "mount -t vfat: \(mounted.output)")
        defer { _ = try? run(["umount", mnt]) }
        let listing = { (root: String) throws -> [String] in
            try run(["find", root, "-printf", "%P|%y\\n"]).output.split(separator: "\n").map(String.init).sorted()
        }
        #expect(try listing(mnt) == listing(dir))
        #expect(try SaveChecks.checksums(mnt) == SaveChecks.checksums(dir))
        print("WholeImageSuite: the kernel's vfat shows the saved boot partition as the sandbox does")
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
        #expect(Self.write("/proc/sys/vm/drop_caches", "2\n"))
        #expect(FileChecks.readFile("\(a)/home/pi/where.txt") == "changed in a\n", "/home after drop_caches")
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
