import Foundation
import Glibc
import Sandbox
import Testing

/// What another local user (uid 1500, through setpriv) can do to the mount, and what the daemon's output
/// gives away: only root and `--group`'s members enter MOUNTPOINT; only root's requests attach pristine/ or
/// decompress an image; a user filling a sandbox leaves root its share of the COW store; save's output
/// follows the caller's umask; names in status are escaped; a FAT partition's fstab owner and masks apply.
@Suite(.serialized, .enabled(if: Environment.canServe && SecuritySuite.canDropPrivileges, Environment.skipReason))
struct LocalUserSuite {
    static let user = "1500", group = "1501"

    /// Runs argv as uid 1500, with group 1501 as its only supplementary group when `inGroup`.
    static func asUser(_ argv: [String], inGroup: Bool) throws -> (status: Int32, output: String) {
        try run(["setpriv", "--reuid=\(user)", "--regid=\(user)"] + (inGroup ? ["--groups=\(group)"] : ["--clear-groups"])
                + ["--"] + argv, allowFailure: true)
    }

    static func mode(_ path: String) -> (mode: UInt32, uid: UInt32, gid: UInt32)? {
        FileChecks.stat(path).map { ($0.st_mode & 0o7777, $0.st_uid, $0.st_gid) }
    }

    /// Without --group: MOUNTPOINT, NAME/, sandboxes/ are root's 0700, closed to uid 1500; with --group 1501
    /// they are 0750 root:1501 and a member lists them. Inside a sandbox the image's modes apply as before
    /// (a process already inside, as in a chroot, reads what is world-readable). instance.json is 0600.
    @Test func onlyRootAndTheGroupEnterTheMount() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        chmod(fixture.work, 0o755)
        chmod(fixture.mountpoint, 0o755)
        try fixture.start()
        let s = fixture.sandbox("pi", "s")
        #expect(mkdir(s, 0o755) == 0)
        for path in [fixture.mountpoint, "\(fixture.mountpoint)/pi", "\(fixture.mountpoint)/pi/sandboxes"] {
            let info = try #require(Self.mode(path))
            #expect(info == (0o700, 0, 0), "\(path): \(String(info.mode, radix: 8)) \(info.uid):\(info.gid)")
            let listed = try Self.asUser(["ls", path], inGroup: true)
            #expect(listed.status != 0 && listed.output.contains("Permission denied"), "\(path): \(listed)")
        }
        let names = InstanceNames(pid: try #require(fixture.pid))
        #expect(Self.mode(names.instanceRecord)?.mode == 0o600, "instance.json")
        // A process already inside the sandbox (a chroot, run) works under its own uid as before.
        let inside = Posix.asUser(1500, 1500, in: s + "/etc") { () -> Outcome in
            var o = Outcome()
            o.note(Self.readInChild("hostname"))
            return o
        }
        #expect(inside.description.contains("raspberrypi"), "\(inside.description)")
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)

        try fixture.start(["--group", Self.group])
        #expect(mkdir(s, 0o755) == 0)
        for path in [fixture.mountpoint, "\(fixture.mountpoint)/pi", "\(fixture.mountpoint)/pi/sandboxes"] {
            let info = try #require(Self.mode(path))
            #expect(info == (0o750, 0, 1501), "\(path): \(String(info.mode, radix: 8)) \(info.uid):\(info.gid)")
        }
        let members = try Self.asUser(["ls", "\(fixture.mountpoint)/pi/sandboxes"], inGroup: true)
        #expect(members.status == 0 && members.output == "s\n", "\(members)")
        let others = try Self.asUser(["ls", fixture.mountpoint], inGroup: false)
        #expect(others.status != 0 && others.output.contains("Permission denied"), "\(others)")
        let make = try Self.asUser(["mkdir", fixture.sandbox("pi", "mine")], inGroup: true)
        #expect(make.status != 0 && make.output.contains("Permission denied"), "\(make)")
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
    }

    /// A member listing IMAGE/ (ls -l looks pristine/ up) or pristine/ itself gets EACCES: no loop device, no
    /// kernel mount of the image, no decompression of a compressed image. Root's request attaches it; then the
    /// member may read it like the rest.
    @Test func onlyRootAttachesPristineOrDecompresses() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        chmod(fixture.work, 0o755)
        chmod(fixture.mountpoint, 0o755)
        try CompressedImageSuite.makeCompressed(fixture, "packed", "xz")
        try fixture.start(["--group", Self.group, "--cache-dir", CompressedImageSuite.cache(fixture)])
        for image in ["pi", "packed"] {
            let long = try Self.asUser(["ls", "-l", "\(fixture.mountpoint)/\(image)"], inGroup: true)
            #expect(long.output.contains("sandboxes"), "\(image): \(long)")
            let pristine = try Self.asUser(["ls", "\(fixture.mountpoint)/\(image)/pristine"], inGroup: true)
            #expect(pristine.status != 0 && pristine.output.contains("Permission denied"), "\(image): \(pristine)")
        }
        #expect(!fixture.log.contains { $0.contains("pristine view of") && $0.contains("attached") }, "\(fixture.log)")
        #expect(!fixture.log.contains { $0.contains("decompressing") }, "\(fixture.log)")
        #expect(CompressedImageSuite.cacheFiles(fixture).isEmpty, "\(CompressedImageSuite.cacheFiles(fixture))")
        #expect(!(try Self.loopBackingFiles()).contains { $0.hasPrefix(fixture.work) }, "no loop device of the images")

        // Root attaches it; the member then reads it (the image's modes apply inside).
        #expect(FileChecks.readFile("\(fixture.mountpoint)/pi/pristine/etc/hostname") == "raspberrypi\n")
        let read = try Self.asUser(["cat", "\(fixture.mountpoint)/pi/pristine/etc/hostname"], inGroup: true)
        #expect(read.status == 0 && read.output == "raspberrypi\n", "\(read)")
        #expect(fixture.stop() == 0)
    }

    /// save's OUT gets 0666 less the caller's umask (the daemon's is 0).
    @Test func saveFollowsTheCallersUmask() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        try fixture.start()
        let s = fixture.sandbox("pi", "s")
        #expect(mkdir(s, 0o755) == 0)
        for (mask, expected) in [("077", UInt32(0o600)), ("002", UInt32(0o664))] {
            let output = "\(fixture.work)/out-\(mask).img"
            let saved = try run(["sh", "-c", "umask \(mask) && exec \"$@\"", "sh", Paths.binary, "save", "--quiet", s, output],
                                allowFailure: true)
            #expect(saved.status == 0, "\(saved)")
            #expect(Self.mode(output)?.mode == expected, "umask \(mask): \(Self.mode(output).map { String($0.mode, radix: 8) } ?? "none")")
        }
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
    }

    /// An image file name with an escape sequence is printed by status as \xNN, never as the raw byte.
    @Test func statusEscapesNames() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        let name = "esc\u{1b}[31mred\u{07}"
        try fixture.makeImage(name, kind: "whole-ext4")
        try fixture.start()
        let s = fixture.sandbox(name, "s")
        #expect(mkdir(s, 0o755) == 0, "\(String(cString: strerror(errno)))")
        let table = try run([Paths.binary, "status", fixture.mountpoint]).output
        #expect(table.contains("esc\\x1b[31mred\\x07"), "\(table)")
        #expect(!table.utf8.contains(0x1b) && !table.utf8.contains(0x07), "\(table.debugDescription)")
        let missing = try run([Paths.binary, "diff", fixture.mountpoint + "/" + name + "/sandboxes/none"], allowFailure: true)
        #expect(missing.status != 0 && !missing.output.utf8.contains(0x1b), "\(missing.output.debugDescription)")
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
    }

    /// A FAT partition mounted with uid=1500,gid=1501,umask=0077,fmask=0177 shows as vfat would: 0700
    /// directories, 0600 files (fmask after umask wins; umask alone would leave files 0700: vfat files are
    /// executable), owned 1500:1501, in a sandbox and in pristine/; only that owner enters it.
    @Test func fatFstabOwnershipOptions() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        let root = fixture.work + "/root"
        try FileManager.default.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/boot/firmware", withIntermediateDirectories: true)
        try "raspberrypi\n".write(toFile: root + "/etc/hostname", atomically: false, encoding: .utf8)
        try """
            PARTUUID=6c586e13-01 /boot/firmware vfat defaults,uid=1500,gid=1501,umask=0077,fmask=0177 0 2
            PARTUUID=6c586e13-02 / ext4 defaults,noatime 0 1

            """.write(toFile: root + "/etc/fstab", atomically: false, encoding: .utf8)
        try fixture.makeImage("pi", kind: "rpi", extra: ["--root-dir", root])
        try fixture.start()
        let s = fixture.sandbox("pi", "s")
        #expect(mkdir(s, 0o755) == 0)
        for boot in [s + "/boot/firmware", "\(fixture.mountpoint)/pi/pristine/boot/firmware"] {
            let directory = try #require(Self.mode(boot))
            #expect(directory == (0o700, 1500, 1501), "\(boot): \(String(directory.mode, radix: 8)) \(directory.uid):\(directory.gid)")
            let file = try #require(Self.mode(boot + "/config.txt"))
            #expect(file == (0o600, 1500, 1501), "config.txt: \(String(file.mode, radix: 8)) \(file.uid):\(file.gid)")
        }
        let owner = Posix.asUser(1500, 1500, in: s + "/boot") { () -> Outcome in
            var o = Outcome()
            o.note(Self.readInChild("firmware/config.txt"))
            return o
        }
        #expect(owner.description.contains("arm_64bit=1"), "\(owner.description)")
        let other = Posix.asUser(1600, 1600, in: s + "/boot") { () -> Outcome in
            var o = Outcome()
            o.note(Self.readInChild("firmware/config.txt"))
            return o
        }
        #expect(other.description.contains("unreadable: EACCES"), "\(other.description)")
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
    }

    /// A FAT entry whose chain loops: diff lists it as one `unreadable` line and the rest as usual; save
    /// fails naming it and leaves no output.
    @Test func corruptFATEntryIsOneDiffLineAndFailsSave() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        let path = "\(fixture.images)/pi.img"
        if let shared = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
            #expect(unlink(path) == 0)
            try run(["cp", "--sparse=always", shared, path])
        }
        let fat = try FAT32Patcher(image: path)
        let config = try fat.rootEntry("CONFIG  TXT")
        try fat.put(config.offset + 28, FAT32Patcher.le32(UInt32(8 * fat.sectorsPerCluster * fat.bytesPerSector)))
        try fat.setFAT(config.cluster, config.cluster)
        fat.close()
        fixture.checksums[path] = try fixture.fingerprint(path)
        try fixture.start()
        let s = fixture.sandbox("pi", "s")
        #expect(mkdir(s, 0o755) == 0)
        #expect(FileManager.default.createFile(atPath: s + "/boot/firmware/new.txt", contents: Data("new\n".utf8)))
        let diff = try run([Paths.binary, "diff", s], allowFailure: true)
        #expect(diff.status == 0, "\(diff)")
        let lines = diff.output.split(separator: "\n").map(String.init)
        #expect(lines.filter { $0.contains("config.txt") } == ["unreadable /boot/firmware/config.txt"], "\(lines)")
        #expect(lines.contains("added /boot/firmware/new.txt"), "\(lines)")
        let output = fixture.work + "/out.img"
        let saved = try run([Paths.binary, "save", "--quiet", s, output], allowFailure: true)
        #expect(saved.status != 0 && saved.output.contains("/boot/firmware/config.txt"), "\(saved)")
        #expect(!FileManager.default.fileExists(atPath: output) && !FileManager.default.fileExists(atPath: output + ".partial"))
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
    }

    /// A file's first bytes with bare syscalls (for a forked child), or its errno's name.
    static func readInChild(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "unreadable: \(ErrnoName.of(errno))" }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = read(fd, &buffer, buffer.count)
        return n < 0 ? "unreadable: \(ErrnoName.of(errno))" : String(decoding: buffer.prefix(n), as: UTF8.self)
    }

    /// Backing files of the loop devices in use (losetup).
    static func loopBackingFiles() throws -> [String] {
        try run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"]).output.split(separator: "\n")
            .map { String($0).trimmingCharacters(in: .whitespaces) }
    }
}
