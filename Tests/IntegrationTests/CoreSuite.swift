import Foundation
import Glibc
import LinuxBlock
import Sandbox
import Testing

/// The core contract, run natively with the overlay engine and in the VM with dm (Tools/vm-test).
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct CoreSuite {
    @Test func twoImagesThreeSandboxesIsolationStatusAndTeardown() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", []), ("disk", "gpt", [])])
        defer { fixture.close() }
        try fixture.start()
        let names = try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint).sorted()
        #expect(names == ["disk", "pi"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(fixture.mountpoint)/pi").sorted() == ["pristine", "sandboxes"])

        let a = fixture.sandbox("pi", "a"), b = fixture.sandbox("pi", "b"), c = fixture.sandbox("disk", "c")
        for path in [a, b, c] { #expect(mkdir(path, 0o755) == 0, "mkdir \(path): \(String(cString: strerror(errno)))") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(fixture.mountpoint)/pi/sandboxes").sorted() == ["a", "b"])
        #expect(FileChecks.readFile("\(a)/etc/hostname") != nil, "the sandbox shows the image's root")

        let before = try fixture.status()
        #expect(before.count == 3)
        for row in before {
            #expect(row["engine"] as? String == Environment.engine)
            #expect(row["state"] as? String == "active")
            for key in ["image", "sandbox", "cow_used_bytes", "cow_total_bytes", "mount_path"] { #expect(row[key] != nil) }
        }
        // df shows room to write: at least most of the COW budget.
        var fs = statvfs()
        #expect(statvfs(a, &fs) == 0)
        #expect(UInt64(fs.f_bavail) * UInt64(fs.f_frsize) > 150 << 20)
        if Environment.engine == "overlay" {
            // Defect: overlayfs reports its upper only ("504M size, 44K used"): df counts the image's use too.
            let names = InstanceNames(pid: try #require(fixture.pid))
            let lowers = Mount.mountPoints().filter { names.holds(path: $0.mountPoint) && $0.mountPoint.contains("/lower-") }
            let lowerUsed = lowers.compactMap { try? FilesystemUsage.of($0.mountPoint) }.map { $0.totalBytes - $0.freeBytes }
            let used = (UInt64(fs.f_blocks) - UInt64(fs.f_bfree)) * UInt64(fs.f_frsize)
            #expect(lowerUsed.count == 2 && used >= lowerUsed.min() ?? .max, "df used \(used), the images' roots use \(lowerUsed)")
        }

        // 100 MiB in a, whose COW use is checked below; b and c only need data of their own (each MiB
        // written and read back cost 0.2-0.5 s under emulation).
        try FileChecks.makeChanges(in: a, tag: "a", bigMebibytes: 100)
        try FileChecks.makeChanges(in: b, tag: "b", bigMebibytes: 8)
        try FileChecks.makeChanges(in: c, tag: "c", bigMebibytes: 8)
        // New files land on the COW store, whose inode numbers repeat the image's: FUSE must still show
        // every inode under its own number (`cp -a` refused "hard link to directory" before).
        for n in 0..<64 { try FileChecks.writeFile("\(b)/work/b/n\(n)", "\(n)") }
        let clashes = FileChecks.inodeClashes(under: b)
        #expect(clashes.isEmpty, "\(clashes.count) inode clashes, e.g. \(clashes.prefix(3))")
        // Isolation: nothing of a in b, nothing of either in a fresh sandbox.
        #expect(!FileManager.default.fileExists(atPath: "\(b)/work/a"))
        #expect(FileChecks.readFile("\(b)/etc/hostname") == "b\n")
        let fresh = fixture.sandbox("pi", "fresh")
        #expect(mkdir(fresh, 0o755) == 0)
        #expect(!FileManager.default.fileExists(atPath: "\(fresh)/work"))
        #expect(FileChecks.readFile("\(fresh)/etc/hostname") != "a\n")

        let after = try fixture.status()
        func used(_ rows: [[String: Any]], _ name: String) -> UInt64 {
            (rows.first { $0["sandbox"] as? String == name }?["cow_used_bytes"] as? NSNumber)?.uint64Value ?? 0
        }
        #expect(used(after, "a") >= used(before, "a") + (90 << 20), "COW use rises with 100 MiB written")

        // EBUSY with an open file; then rmdir one while the others keep working.
        let fd = open("\(a)/work/a/note.txt", O_RDONLY)
        #expect(fd >= 0)
        #expect(rmdir(a) == -1 && errno == EBUSY)
        #expect(FileChecks.readFile("\(a)/work/a/note.txt") == "hello from a\n")
        close(fd)
        #expect(rmdir(a) == 0, "rmdir: \(String(cString: strerror(errno)))")
        #expect(!FileManager.default.fileExists(atPath: a))
        #expect(FileChecks.readFile("\(b)/work/b/note.txt") == "hello from b\n")
        #expect(FileChecks.readFile("\(c)/work/c/note.txt") == "hello from c\n")
        // A new sandbox of the same name starts clean.
        #expect(mkdir(a, 0o755) == 0)
        #expect(!FileManager.default.fileExists(atPath: "\(a)/work"))

        #expect(try run(["umount", fixture.mountpoint]).status == 0)
        #expect(fixture.stop() == 0)
    }

    @Test func userErrors() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", []), ("nolinux", "no-linux", [])])
        defer { fixture.close() }
        try fixture.start()
        #expect(mkdir("\(fixture.mountpoint)/pi/other", 0o755) == -1 && errno == EPERM)
        #expect(mkdir("\(fixture.mountpoint)/newimage", 0o755) == -1 && errno == EPERM)
        #expect(mkdir(fixture.sandbox("pi", "bad name"), 0o755) == -1 && errno == EINVAL)
        #expect(mkdir(fixture.sandbox("pi", "-x"), 0o755) == -1 && errno == EINVAL)
        #expect(mkdir(fixture.sandbox("pi", "ok"), 0o755) == 0)
        #expect(mkdir(fixture.sandbox("pi", "ok"), 0o755) == -1 && errno == EEXIST)
        #expect(mkdir(fixture.sandbox("nolinux", "x"), 0o755) == -1 && errno == EMEDIUMTYPE)
        #expect(fixture.waitForLog { $0.contains("nolinux") && $0.contains("error") }, "one log line says what failed")
        #expect(rmdir(fixture.sandbox("pi", "nope")) == -1 && errno == ENOENT)
        #expect(fixture.stop(with: SIGINT) == 0)
    }

    @Test func imagesAppearAndDisappearWhileServing() throws {
        let fixture = try ServeFixture(images: [("one", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint) == ["one"])
        try fixture.makeImage("two", kind: "whole-ext4")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint).sorted() == ["one", "two"])
        #expect(mkdir(fixture.sandbox("two", "s"), 0o755) == 0)
        try fixture.removeImage("two")
        // An image with a live sandbox stays until the sandbox is gone.
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint).sorted() == ["one", "two"])
        #expect(FileChecks.readFile("\(fixture.sandbox("two", "s"))/etc/hostname") != nil)
        #expect(rmdir(fixture.sandbox("two", "s")) == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint) == ["one"])
        #expect(fixture.stop() == 0)
    }

    @Test(.enabled(if: Environment.engine == "overlay", "the tmpfs fallback is the overlay engine's"))
    func withoutZramTheOverlayUsesASizeLimitedTmpfs() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        let faults = try FaultInjector(in: fixture.work)
        try faults.set("no-zram")
        try fixture.start(["--cow-size", "64M"], environment: faults.environment)
        let sandbox = fixture.sandbox("pi", "t")
        #expect(mkdir(sandbox, 0o755) == 0)
        let row = try #require(try fixture.status().first)
        #expect(row["cow_store"] as? String == "tmpfs")
        try FileChecks.writeFile("\(sandbox)/etc/hostname", "tmpfs\n")
        #expect(FileChecks.readFile("\(sandbox)/etc/hostname") == "tmpfs\n")
        var fs = statvfs()
        #expect(statvfs(sandbox, &fs) == 0)
        #expect(UInt64(fs.f_bfree) * UInt64(fs.f_frsize) <= 64 << 20, "df's free room is what the tmpfs can still take")
        #expect(throws: (any Error).self) { try FileChecks.writeBig("\(sandbox)/too-big", mebibytes: 80, seed: 1) }
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
    }
}
