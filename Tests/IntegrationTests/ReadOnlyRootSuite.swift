import Foundation
import Glibc
import LinuxBlock
import Testing

private let readOnlyRootTools = ["mksquashfs", "unsquashfs", "mkfs.erofs", "fsck.erofs", "mkimage", "setfattr", "getfattr", "setcap", "getcap", "setfacl"]
    .allSatisfy { FileManager.default.isExecutableFile(atPath: "/usr/bin/" + $0) || FileManager.default.isExecutableFile(atPath: "/sbin/" + $0) }

/// squashfs and erofs roots (OpenWrt, Home Assistant OS): writable sandboxes, diff, and save, which makes the
/// filesystem anew with the image's compressor and options (issue 25, item 4). On either engine.
@Suite(.serialized, .enabled(if: Environment.canServe && readOnlyRootTools, "needs root, FUSE, squashfs-tools, erofs-utils, mkimage"))
struct ReadOnlyRootSuite {
    /// The changes every test makes: a file changed (it has an xattr in the image), one deleted, symlinks that
    /// point out of the tree (stored as links, never followed), owners, xattrs, a capability, a hard link.
    static func change(_ sandbox: String, hostname: String) throws {
        try FileChecks.writeFile("\(sandbox)/etc/hostname", hostname)
        #expect(unlink("\(sandbox)/home/pi/readme.txt") == 0)
        #expect(symlink("/etc/shadow", "\(sandbox)/escape") == 0)
        #expect(symlink("/", "\(sandbox)/hostroot") == 0)
        #expect(mkdir("\(sandbox)/work", 0o750) == 0)
        try FileChecks.writeFile("\(sandbox)/work/new.txt", "new\n")
        #expect(link("\(sandbox)/work/new.txt", "\(sandbox)/work/hard") == 0)
        #expect(chown("\(sandbox)/work", 1000, 1000) == 0 && chown("\(sandbox)/work/new.txt", 1000, 1001) == 0)
        try run(["setfattr", "-n", "user.test", "-v", "kept", "\(sandbox)/work/new.txt"])
        try run(["setcap", "cap_net_raw=ep", "\(sandbox)/usr/bin/hello"])
    }

    /// A sandbox of the saved image holds what `change` did, and the whole tree is the sandbox's (mtimes to the
    /// second: squashfs keeps no more).
    static func expectSavedChanges(_ copy: String, like sandbox: String, hostname: String, fixture: ServeFixture) throws {
        // Each entry looked up first, with its errno and the daemon's complaints when it fails.
        for path in ["etc/hostname", "work", "work/new.txt", "work/hard", "usr/bin/hello", "escape"] {
            var info = Glibc.stat()
            let rc = lstat("\(copy)/\(path)", &info), saved = errno
            #expect(rc == 0, "lstat \(path): \(String(cString: strerror(saved))); daemon: \(fixture.log.filter { $0.contains("error") || $0.contains("warning") }.suffix(8))")
        }
        #expect(FileChecks.readFile("\(copy)/etc/hostname") == hostname)
        #expect(try run(["getfattr", "--absolute-names", "--only-values", "-n", "user.origin", "\(copy)/etc/hostname"]).output == "image")
        #expect(!FileManager.default.fileExists(atPath: "\(copy)/home/pi/readme.txt"))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "\(copy)/escape") == "/etc/shadow")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "\(copy)/hostroot") == "/")
        let work = try #require(FileChecks.stat("\(copy)/work")), new = try #require(FileChecks.stat("\(copy)/work/new.txt"))
        #expect(work.st_uid == 1000 && work.st_gid == 1000 && work.st_mode & 0o7777 == 0o750)
        #expect(new.st_uid == 1000 && new.st_gid == 1001 && new.st_nlink == 2)
        #expect(FileChecks.stat("\(copy)/work/hard")?.st_ino == new.st_ino, "the hard link stays one")
        #expect(try run(["getfattr", "--absolute-names", "--only-values", "-n", "user.test", "\(copy)/work/new.txt"]).output == "kept")
        #expect(try run(["getcap", "\(copy)/usr/bin/hello"]).output.contains("cap_net_raw=ep"))
        let seconds = { (lines: [String]) in lines.map { $0.replacing(/\.[0-9]+(\||$)/, with: { $0.output.1 }) } }
        #expect(try seconds(SaveChecks.listing(copy)) == seconds(SaveChecks.listing(sandbox)))
        #expect(try SaveChecks.xattrs(copy) == SaveChecks.xattrs(sandbox))
        #expect(try SaveChecks.checksums(copy) == SaveChecks.checksums(sandbox))
    }

    /// Whether to save changes larger than the root's partition (grown, or refused). That is the save's
    /// arithmetic over the rebuilt filesystem, the same on both engines, and its tens of MiB of data that does
    /// not compress take minutes to compress under emulation: natively only. In the VM (dm) the save of each
    /// root, which reads dm's change journal and makes the filesystem that 6.1 then mounts, is tested above it.
    static let growthIsTestedHere = Environment.engine != "dm"

    /// The end of a test that stops before its growth part: the sandbox goes, the image is unchanged.
    static func finish(_ fixture: ServeFixture, sandbox: String, source: String, sum: String) throws {
        #expect(rmdir(sandbox) == 0)
        #expect(try fixture.fingerprint(source) == sum)
        #expect(fixture.stop() == 0)
    }

    /// OpenWrt-like: the squashfs root (xz, arm BCJ, 256 KiB blocks) is the last partition, 20 MiB. A save
    /// that fits makes a squashfs of the same kind in place; one that does not grows the partition and the file.
    @Test func squashfsRootIsMadeAnewAndGrowsAsTheLastPartition() throws {
        let fixture = try ServeFixture(images: [("openwrt", "openwrt-like", [])])
        defer { fixture.close() }
        try fixture.start()
        let source = fixture.images + "/openwrt.img", sourceSum = try fixture.fingerprint(source)
        let sandbox = fixture.sandbox("openwrt", "s")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(sandbox)/which-partition") == "p2 squashfs root\n")
        try Self.change(sandbox, hostname: "saved-openwrt\n")
        let diff = try ChangeFixture.diff(sandbox).output.split(separator: "\n").map(String.init)
        for line in ["added /escape", "added /hostroot", "added /work/hard", "deleted /home/pi/readme.txt"] {
            #expect(diff.contains(line), "diff lists \(line): \(diff)")
        }
        #expect(diff.contains { $0.hasPrefix("modified ") && $0.hasSuffix(" /etc/hostname") }, "\(diff)")

        // A POSIX ACL (system.posix_acl_access): squashfs cannot hold it; the save says so.
        try FileChecks.writeFile("\(sandbox)/work/acl.txt", "acl\n")
        try run(["setfacl", "-m", "u:1000:r", "\(sandbox)/work/acl.txt"])
        let output = fixture.work + "/saved.img"
        let saved = try run([Paths.binary, "save", "--quiet", sandbox, output], allowFailure: true)
        try #require(saved.status == 0, "save: \(saved.output)")
        #expect(fixture.waitForLog { $0.contains("save: /work/acl.txt has xattrs outside user./trusted./security.") })
        try run(["setfacl", "-b", "\(sandbox)/work/acl.txt"])
        #expect(FileChecks.stat(output)?.st_size == FileChecks.stat(URL(fileURLWithPath: source).resolvingSymlinksInPath().path)?.st_size,
                "a squashfs that fits keeps the image's size")
        let root = try SaveChecks.extractPartition(output, work: fixture.work, index: 1)
        defer { unlink(root) }
        let stat = try run(["unsquashfs", "-stat", root]).output
        for fact in ["Compression xz", "Filters selected: arm", "Block size 262144"] { #expect(stat.contains(fact), "\(fact): \(stat)") }
        let listing = try run(["unsquashfs", "-lls", root]).output
        #expect(listing.contains("squashfs-root/escape -> /etc/shadow") && listing.contains("squashfs-root/hostroot -> /"))
        #expect(listing.split(separator: "\n").count < 40, "nothing of the host's / was read through the link: \(listing)")

        #expect(rename(output, fixture.images + "/saved.img") == 0)
        let copy = fixture.sandbox("saved", "c")
        #expect(mkdir(copy, 0o755) == 0)
        // squashfs has no ACLs: the kernel's FUSE permission check of the 0750 work/ (root is not its owner) asks for
        // its ACL, and 6.1's overlayfs answers EOPNOTSUPP for it, which failed the walk to work/new.txt.
        let acl = try run(["getfattr", "--absolute-names", "-n", "system.posix_acl_access", "\(copy)/work"], allowFailure: true)
        #expect(acl.status != 0 && acl.output.contains("No such attribute"), "no ACL, not an error: \(acl.output)")
        try Self.expectSavedChanges(copy, like: sandbox, hostname: "saved-openwrt\n", fixture: fixture)
        #expect(rmdir(copy) == 0)
        guard Self.growthIsTestedHere else { return try Self.finish(fixture, sandbox: sandbox, source: source, sum: sourceSum) }

        // 30 MiB that does not compress: more than the 20 MiB partition. It is the last: it and the file grow.
        try FileChecks.writeBig("\(sandbox)/big", mebibytes: 30, seed: 3)
        let grown = fixture.work + "/grown.img"
        try SaveChecks.saveAndExpectGrowth(sandbox, source: source, output: grown)
        #expect(fixture.waitForLog { $0.contains("more than partition 2 (/) had free; it and the file grew") })
        #expect(try run(["sfdisk", "-V", grown]).status == 0)
        #expect(try SaveChecks.table(grown, resized: 2) == SaveChecks.table(source, resized: 2), "only the root's size changed")
        try SaveChecks.expectServedOutputHolds(grown, fixture: fixture, from: sandbox, hostname: "saved-openwrt\n", bigFile: "big")
        #expect(try fixture.fingerprint(source) == sourceSum)
        #expect(fixture.stop() == 0)
    }

    /// Home Assistant OS-like: the erofs system0 (lz4hc) is partition 2 of 5. A save makes an erofs that fsck.erofs
    /// accepts, with the image's UUID and compression; changes larger than the partition stop the save with ENOSPC.
    @Test func erofsRootIsMadeAnewAndRefusedWhenItCannotGrow() throws {
        let fixture = try ServeFixture(images: [("haos", "haos-like", [])])
        defer { fixture.close() }
        try fixture.start()
        let source = fixture.images + "/haos.img", sourceSum = try fixture.fingerprint(source)
        let sandbox = fixture.sandbox("haos", "s")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(sandbox)/which-partition") == "system0\n")
        try FileChecks.writeFile("\(sandbox)/etc/hostname", "raspberrypi\n")
        try run(["setfattr", "-n", "user.origin", "-v", "image", "\(sandbox)/etc/hostname"])
        try Self.change(sandbox, hostname: "saved-haos\n")
        let diff = try ChangeFixture.diff(sandbox).output
        #expect(diff.contains("deleted /home/pi/readme.txt") && diff.contains("added /escape"), "\(diff)")

        let output = fixture.work + "/saved.img"
        let saved = try run([Paths.binary, "save", "--quiet", sandbox, output], allowFailure: true)
        try #require(saved.status == 0, "save: \(saved.output)")
        #expect(try SaveChecks.fsck(output, work: fixture.work, partition: 1, ["fsck.erofs"]), "fsck.erofs of the saved system0")
        let before = try SaveChecks.extractPartition(source, work: fixture.work, index: 1)
        let superblockBefore = Array(try Data(contentsOf: URL(fileURLWithPath: before))[1024..<1152])
        unlink(before)
        let after = try SaveChecks.extractPartition(output, work: fixture.work, index: 1)
        let superblockAfter = Array(try Data(contentsOf: URL(fileURLWithPath: after))[1024..<1152])
        unlink(after)
        #expect(superblockAfter[48..<64] == superblockBefore[48..<64], "the UUID stays")
        #expect(superblockAfter[80..<86] == superblockBefore[80..<86], "the compression stays (lz4)")
        #expect(try fixture.fingerprint(source) == sourceSum)

        #expect(rename(output, fixture.images + "/saved.img") == 0)
        let copy = fixture.sandbox("saved", "c")
        #expect(mkdir(copy, 0o755) == 0)
        #expect(try fixture.status().first { $0["image"] as? String == "saved" }?["root"] as? String
                == "partition 2 (erofs): root=PARTUUID=8d3d53e3-6d49-4c38-8349-aff6859e82fd in boot.scr of partition 1")
        try Self.expectSavedChanges(copy, like: sandbox, hostname: "saved-haos\n", fixture: fixture)
        #expect(rmdir(copy) == 0)
        guard Self.growthIsTestedHere else { return try Self.finish(fixture, sandbox: sandbox, source: source, sum: sourceSum) }

        // 40 MiB that lz4 cannot shrink, for a 32 MiB partition with hassos-system1 after it.
        try FileChecks.writeBig("\(sandbox)/big", mebibytes: 40, seed: 4)
        let refused = fixture.work + "/refused.img"
        let failed = try run([Paths.binary, "save", "--quiet", sandbox, refused], allowFailure: true)
        #expect(failed.status != 0)
        #expect(failed.output.contains("partition 2 (/) lacks") && failed.output.contains("No space left"), "says why: \(failed.output)")
        #expect(fixture.waitForLog { $0.contains("partition 2 (/) lacks") })
        let lines = fixture.log.filter { $0.contains("partition 2 (/) lacks") }
        #expect(lines.count == 1 && lines[0].contains("is not the last partition"), "one log line: \(lines)")
        #expect(!FileManager.default.fileExists(atPath: refused) && !FileManager.default.fileExists(atPath: refused + ".partial"))
        #expect(LoopDevice.attached().filter { $0.backingFile.hasPrefix(refused) }.isEmpty)
        try FileChecks.writeFile("\(sandbox)/etc/hostname", "still\n")
        #expect(rmdir(sandbox) == 0)
        #expect(try fixture.fingerprint(source) == sourceSum)
        #expect(fixture.stop() == 0)
    }

    /// A squashfs partition fstab mounts at /opt (not the root): writable in the sandbox, diffed under /opt,
    /// saved as a new squashfs in its partition while the ext4 root gets its changes replayed.
    @Test func squashfsPartitionInFstabIsWritableAndSaved() throws {
        let fixture = try ServeFixture(images: [("opt", "rpi-squashfs-opt", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("opt", "s")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(sandbox)/which-partition") == "p2 root\n")
        #expect(FileChecks.readFile("\(sandbox)/opt/which-partition") == "p3 squashfs opt\n")
        try FileChecks.writeFile("\(sandbox)/opt/bin/app", "#!/bin/sh\necho changed\n")
        try FileChecks.writeFile("\(sandbox)/opt/added", "in /opt\n")
        try FileChecks.writeFile("\(sandbox)/etc/hostname", "opt-box\n")
        let diff = try ChangeFixture.diff(sandbox).output.split(separator: "\n").map(String.init)
        #expect(diff.contains("added /opt/added") && diff.contains { $0.hasSuffix(" /opt/bin/app") && $0.hasPrefix("modified ") }, "\(diff)")
        let output = fixture.work + "/saved.img"
        let saved = try run([Paths.binary, "save", "--quiet", sandbox, output], allowFailure: true)
        try #require(saved.status == 0, "save: \(saved.output)")
        let opt = try SaveChecks.extractPartition(output, work: fixture.work, index: 2)
        defer { unlink(opt) }
        #expect(try run(["unsquashfs", "-stat", opt]).output.contains("Compression gzip"))
        #expect(try run(["unsquashfs", "-lls", opt]).output.contains("squashfs-root/added"))
        #expect(try SaveChecks.fsck(output, work: fixture.work, partition: 1, ["e2fsck", "-fn"]), "e2fsck -fn of the saved root")
        #expect(rename(output, fixture.images + "/saved.img") == 0)
        let copy = fixture.sandbox("saved", "c")
        #expect(mkdir(copy, 0o755) == 0)
        #expect(FileChecks.readFile("\(copy)/opt/bin/app") == "#!/bin/sh\necho changed\n")
        #expect(FileChecks.readFile("\(copy)/opt/added") == "in /opt\n")
        #expect(FileChecks.readFile("\(copy)/etc/hostname") == "opt-box\n")
        #expect(rmdir(copy) == 0)
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
    }
}
