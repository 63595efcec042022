import Foundation
import Glibc
import Testing

/// `imgsandbox save`: a new image holding exactly the sandbox's changes; refusals and failures leave nothing.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct SaveSuite {
    @Test func savedImageHoldsEveryChangeAndNothingElse() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("pi", "s")
        #expect(mkdir(sandbox, 0o755) == 0)
        try ChangeFixture.make(in: sandbox)
        let output = fixture.work + "/out.img"
        let saved = try run([Paths.binary, "save", sandbox, output], allowFailure: true)
        try #require(saved.status == 0, "save: \(saved.output)")
        #expect(!FileManager.default.fileExists(atPath: output + ".partial"))
        // The served image may be a symlink (to the VM's image cache): compare with the file itself.
        let sourceFile = URL(fileURLWithPath: fixture.images + "/pi.img").resolvingSymlinksInPath().path
        #expect(FileChecks.stat(output)?.st_size == FileChecks.stat(sourceFile)?.st_size,
                "changes that fit keep the image's size")
        #expect(try SaveChecks.fsckRoot(output, work: fixture.work), "e2fsck -fn of the saved root partition")
        #expect(try SaveChecks.fsckBoot(output, work: fixture.work), "fsck.fat -n of the saved boot partition")
        // The sandbox still works after its freeze, and what it writes now is not in the output.
        try FileChecks.writeFile("\(sandbox)/etc/after-save", "later\n")

        // Refusals: an existing output, the served tree, the source itself.
        let before = try fixture.fingerprint(output)
        #expect(try run([Paths.binary, "save", sandbox, output], allowFailure: true).status != 0)
        #expect(try fixture.fingerprint(output) == before, "an existing output is kept without --force")
        #expect(try run([Paths.binary, "save", sandbox, fixture.mountpoint + "/pi/x.img", "--force"], allowFailure: true).status != 0)
        #expect(try run([Paths.binary, "save", sandbox, fixture.images + "/pi.img", "--force"], allowFailure: true).status != 0)

        // Served as an image of its own, the output shows the changed tree exactly.
        #expect(rename(output, fixture.images + "/saved.img") == 0)
        let copy = fixture.sandbox("saved", "check")
        #expect(mkdir(copy, 0o755) == 0)
        #expect(unlink("\(sandbox)/etc/after-save") == 0)
        let fresh = try ChangeFixture.diff(copy)
        #expect(fresh.status == 0 && fresh.output.isEmpty, "a fresh sandbox of the output has no changes")
        // /etc's mtime moved with the file made and removed after the save: compare it apart.
        try SaveChecks.expectSameTree(copy, sandbox, ignoring: ["etc|"])
        #expect(FileChecks.readFile("\(copy)/etc/hostname") == "saved-box\n")
        #expect(!FileManager.default.fileExists(atPath: "\(copy)/etc/after-save"))
        #expect(!FileManager.default.fileExists(atPath: "\(copy)/home/pi/readme.txt"))
        #expect(FileChecks.readFile("\(copy)/boot/firmware/config.txt") == "arm_64bit=1\ndtoverlay=saved\n")
        #expect(!FileManager.default.fileExists(atPath: "\(copy)/boot/firmware/cmdline.txt"))
        #expect(FileManager.default.fileExists(atPath: "\(copy)/boot/firmware/ssh"))
        let caps = try run(["getcap", "\(copy)/usr/bin/hello"]).output
        #expect(caps.contains("cap_net_raw=ep"), "security.capability survives: \(caps)")
        let acl = try run(["getfacl", "-n", "-c", "\(copy)/work/new.txt"]).output, sandboxACL = try run(["getfacl", "-n", "-c", "\(sandbox)/work/new.txt"]).output
        #expect(acl.contains("user:1000:r--") && acl == sandboxACL, "the ACL survives: \(acl) vs \(sandboxACL)")
        let inode = { (path: String) in FileChecks.stat(path)?.st_ino }
        #expect(inode("\(copy)/work/hard") == inode("\(copy)/work/new.txt"), "hard links stay links")
        #expect(inode("\(copy)/work/hostname-hard") == inode("\(copy)/etc/hostname"))
        let sparse = try #require(FileChecks.stat("\(copy)/work/sparse"))
        #expect(sparse.st_size == ChangeFixture.sparseSize && sparse.st_blocks * 512 < 1 << 20, "the sparse file stays sparse")
        #expect(fixture.stop() == 0)
    }

    @Test func shrinkMakesASmallerImageThatStillChecksClean() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", ["--size", "512M"])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("pi", "s")
        #expect(mkdir(sandbox, 0o755) == 0)
        try FileChecks.writeFile("\(sandbox)/etc/hostname", "shrunk\n")
        // Content where resize2fs -P alone would leave the root far bigger than it (see RootShrink).
        try run(["dd", "if=/dev/urandom", "of=\(sandbox)/data", "bs=1M", "count=100", "status=none"])
        let plain = fixture.work + "/plain.img", shrunk = fixture.work + "/shrunk.img"
        #expect(try run([Paths.binary, "save", "--quiet", sandbox, plain]).status == 0)
        let saved = try run([Paths.binary, "save", "--shrink", sandbox, shrunk], allowFailure: true)
        try #require(saved.status == 0, "save --shrink: \(saved.output)")
        let plainSize = try #require(FileChecks.stat(plain)?.st_size), shrunkSize = try #require(FileChecks.stat(shrunk)?.st_size)
        #expect(shrunkSize < plainSize * 3 / 5, "shrunk \(shrunkSize) vs \(plainSize)")
        // The root: its blocks in use (dumpe2fs of the plain output) and the margin, 5 % or 64 MiB,
        // rounded up to a MiB.
        let plainRoot = try SaveChecks.extractPartition(plain, work: fixture.work, index: nil)
        defer { unlink(plainRoot) }
        let dump = try run(["dumpe2fs", "-h", plainRoot]).output
        func field(_ name: String) throws -> Int {
            let line = try #require(dump.split(separator: "\n").first { $0.hasPrefix(name + ":") })
            return try #require(Int(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)))
        }
        let used = try field("Block count") - field("Free blocks")
        let bound = (used + max(used / 20, 16384)) * 4096
        let shrunkRoot = try SaveChecks.extractPartition(shrunk, work: fixture.work, index: nil)
        let shrunkRootSize = try #require(FileChecks.stat(shrunkRoot)?.st_size)
        unlink(shrunkRoot)
        #expect(shrunkRootSize <= (bound + (1 << 20) - 1) / (1 << 20) * (1 << 20), "root \(shrunkRootSize) for \(used) blocks in use")
        #expect(try SaveChecks.fsckRoot(shrunk, work: fixture.work))
        #expect(try run(["sfdisk", "-V", shrunk]).status == 0)
        // Same disk identifier and partition identifiers (fstab and cmdline.txt name PARTUUIDs).
        let ids = { (path: String) in try run(["sfdisk", "-d", path]).output.split(separator: "\n")
            .filter { $0.hasPrefix("label-id") || $0.contains("type=") }
            .map { $0.split(separator: ":", maxSplits: 1).last!.split(separator: ",").filter { !$0.contains("size=") }.joined() } }
        #expect(try ids(shrunk) == ids(plain))
        #expect(rename(shrunk, fixture.images + "/shrunk.img") == 0)
        let copy = fixture.sandbox("shrunk", "c")
        #expect(mkdir(copy, 0o755) == 0)
        #expect(FileChecks.readFile("\(copy)/etc/hostname") == "shrunk\n")
        #expect(try fixture.sha256("\(copy)/data") == fixture.sha256("\(sandbox)/data"))
        #expect(fixture.stop() == 0)
    }

    @Test func anotherLinuxPartitionIsDiffedAndSaved() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi-home", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("pi", "h")
        #expect(mkdir(sandbox, 0o755) == 0)
        // /home is a partition of its own (ext4, LABEL=home in fstab).
        try FileChecks.writeFile("\(sandbox)/home/pi/where.txt", "changed on home\n")
        try FileChecks.writeFile("\(sandbox)/home/pi/new.txt", "new on home\n")
        #expect(mkdir("\(sandbox)/home/extra", 0o700) == 0)
        let expected = [
            "modified times /home",
            "added /home/extra",
            "modified times /home/pi",
            "added /home/pi/new.txt",
            "modified content,times /home/pi/where.txt",
        ]
        let diff = try ChangeFixture.diff(sandbox)
        #expect(diff.status == 0)
        #expect(diff.output.split(separator: "\n").map(String.init) == expected)
        let output = fixture.work + "/home.img"
        let saved = try run([Paths.binary, "save", "--quiet", sandbox, output], allowFailure: true)
        try #require(saved.status == 0, "save: \(saved.output)")
        #expect(try SaveChecks.fsck(output, work: fixture.work, partition: 2, ["e2fsck", "-fn"]), "e2fsck -fn of the saved home partition")
        #expect(try SaveChecks.fsckRoot(output, work: fixture.work))
        #expect(rename(output, fixture.images + "/home.img") == 0)
        let copy = fixture.sandbox("home", "c")
        #expect(mkdir(copy, 0o755) == 0)
        #expect(FileChecks.readFile("\(copy)/home/pi/where.txt") == "changed on home\n")
        #expect(FileChecks.readFile("\(copy)/home/pi/new.txt") == "new on home\n")
        #expect(FileChecks.stat("\(copy)/home/extra").map { $0.st_mode & 0o7777 } == 0o700)
        let fresh = try ChangeFixture.diff(copy)
        #expect(fresh.status == 0 && fresh.output.isEmpty, "a fresh sandbox of the output has no changes: \(fresh.output)")
        #expect(fixture.stop() == 0)
    }

    @Test func outOfSpaceLeavesNothingBehind() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        let small = fixture.work + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        try run(["mount", "-t", "tmpfs", "-o", "size=4M", "imgsandbox-test", small])
        defer { _ = try? run(["umount", small]) }
        try fixture.start()
        let sandbox = fixture.sandbox("pi", "s")
        #expect(mkdir(sandbox, 0o755) == 0)
        try FileChecks.writeBig("\(sandbox)/big", mebibytes: 8, seed: 3)
        let failed = try run([Paths.binary, "save", sandbox, small + "/out.img"], allowFailure: true)
        #expect(failed.status != 0)
        #expect(failed.output.contains("No space left"), "says why: \(failed.output)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: small).isEmpty, "no partial file")
        #expect(FileChecks.readFile("\(sandbox)/etc/hostname") != nil, "the sandbox keeps working")
        try FileChecks.writeFile("\(sandbox)/etc/hostname", "still\n")
        #expect(rmdir(sandbox) == 0, "nothing holds the sandbox after a failed save")
        #expect(fixture.stop() == 0)
    }
}

enum SaveChecks {
    /// e2fsck -fn of the image's root (last) partition, copied out sparsely.
    static func fsckRoot(_ image: String, work: String) throws -> Bool {
        try fsck(image, work: work, partition: nil, ["e2fsck", "-fn"])
    }

    /// fsck.fat -n of the image's first partition.
    static func fsckBoot(_ image: String, work: String) throws -> Bool {
        try fsck(image, work: work, partition: 0, ["fsck.fat", "-n"])
    }

    static func fsck(_ image: String, work: String, partition index: Int?, _ checker: [String]) throws -> Bool {
        let part = try extractPartition(image, work: work, index: index)
        defer { unlink(part) }
        let check = try run(checker + [part], allowFailure: true)
        if check.status != 0 { print(check.output) }
        return check.status == 0
    }

    /// Copies partition `index` (the last one when nil) of `image` sparsely to a file in `work`; returns its path.
    static func extractPartition(_ image: String, work: String, index: Int?) throws -> String {
        let json = try run(["sfdisk", "-J", image]).output
        let table = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let partitions = (table?["partitiontable"] as? [String: Any])?["partitions"] as? [[String: Any]] ?? []
        let chosen = index.map { partitions.indices.contains($0) ? partitions[$0] : nil } ?? partitions.last
        guard let part = chosen, let start = part["start"] as? Int, let size = part["size"] as? Int else {
            throw CommandFailed(argv: ["sfdisk", "-J", image], status: 0, output: "no partition \(index ?? -1): \(json)")
        }
        let path = work + "/part-\(index ?? -1).img"
        // 1 MiB reads (offsets in bytes): 512-byte ones cost 30x the time natively (1.1 s against 0.04 s for a
        // 190 MiB root), and far more under the VM's emulation.
        try run(["dd", "if=\(image)", "of=\(path)", "bs=1M", "iflag=skip_bytes,count_bytes", "skip=\(start * 512)",
                 "count=\(size * 512)", "conv=sparse", "status=none"])
        return path
    }

    /// Type, mode, owner, size, mtime, link target and xattrs of every entry, and every regular file's
    /// bytes (but the big sparse one, checked apart), are the same in both trees.
    static func expectSameTree(_ a: String, _ b: String, ignoring: [String] = []) throws {
        let skip = { (line: String) in ignoring.contains { line.hasPrefix($0) } }
        #expect(try listing(a).filter { !skip($0) } == listing(b).filter { !skip($0) })
        #expect(try xattrs(a) == xattrs(b))
        #expect(try checksums(a) == checksums(b))
    }

    static func listing(_ root: String) throws -> [String] {
        let dirs = try run(["find", root, "-type", "d", "-printf", "%P|d|%m|%U|%G|%T@\\n"]).output
        let others = try run(["find", root, "!", "-type", "d", "-printf", "%P|%y|%m|%U|%G|%s|%T@|%l\\n"]).output
        return (dirs + others).split(separator: "\n").map(String.init).sorted()
    }

    static func xattrs(_ root: String) throws -> [String] {
        let dump = try run(["sh", "-c", "cd \"$1\" && getfattr -R -h -d -m - -e hex . 2>/dev/null", "sh", root]).output
        return dump.components(separatedBy: "\n\n").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            .filter { !$0.isEmpty }.sorted()
    }

    static func checksums(_ root: String) throws -> [String] {
        try run(["sh", "-c", "cd \"$1\" && find . -type f ! -path ./work/sparse -exec sha256sum {} +", "sh", root]).output
            .split(separator: "\n").map(String.init).sorted()
    }
}
