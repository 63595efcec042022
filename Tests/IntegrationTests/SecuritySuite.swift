import Foundation
import Glibc
import Sandbox
import TestSupport
import Testing

/// What a host file looked like, to prove an operation on a symlink pointing at it left it alone.
struct HostSnapshot: Equatable, CustomStringConvertible {
    let path: String
    let mode: UInt32, uid: UInt32, gid: UInt32, size: Int64, nlink: UInt64
    let mtime: Int, ctime: Int, ctimeNanos: Int
    let xattrs: String

    init?(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        self.path = path
        mode = info.st_mode
        uid = info.st_uid
        gid = info.st_gid
        size = Int64(info.st_size)
        nlink = UInt64(info.st_nlink)
        mtime = info.st_mtim.tv_sec
        ctime = info.st_ctim.tv_sec
        ctimeNanos = info.st_ctim.tv_nsec
        xattrs = (try? run(["getfattr", "--absolute-names", "-h", "-d", "-m", "-", path], allowFailure: true).output) ?? ""
    }

    var description: String { "\(path) mode \(String(mode, radix: 8)) \(uid):\(gid) size \(size) ctime \(ctime).\(ctimeNanos)" }
}

/// The daemon never follows a symlink from image content, the mount is nosuid,nodev,default_permissions,
/// and a real unprivileged user (nobody, uid 65534, via setpriv) gets only what the modes allow.
///
/// The owner rule: only root creates or removes sandboxes. The virtual tree is root's, mode 0700 (0750 with
/// --group's group), and the kernel checks it (default_permissions), so other users get EACCES even though
/// the mount admits them (LocalUserSuite tests the group).
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct SecuritySuite {
    static let nobody = (uid: "65534", gid: "65534")
    static var canDropPrivileges: Bool { access("/usr/bin/setpriv", X_OK) == 0 || access("/bin/setpriv", X_OK) == 0 }

    /// Runs argv as nobody with no supplementary groups.
    static func asNobody(_ argv: [String]) throws -> (status: Int32, output: String) {
        try run(["setpriv", "--reuid=\(nobody.uid)", "--regid=\(nobody.gid)", "--clear-groups", "--"] + argv, allowFailure: true)
    }

    /// An image root full of links out of the image: absolute to host directories and files (among them a
    /// canary the test owns), relative ones climbing above the root; plus a 0600 secret and a public file.
    static func hostileTree(in work: String, canary: String, canaryDirectory: String) throws -> String {
        let root = work + "/hostile-root"
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/a/b/c", withIntermediateDirectories: true)
        try "raspberrypi\n".write(toFile: root + "/etc/hostname", atomically: false, encoding: .utf8)
        try "for root only\n".write(toFile: root + "/secret", atomically: false, encoding: .utf8)
        chmod(root + "/secret", 0o600)
        try "for everyone\n".write(toFile: root + "/public.txt", atomically: false, encoding: .utf8)
        chmod(root + "/public.txt", 0o644)
        let links = [
            "to-etc": "/etc", "to-root": "/root", "to-passwd": "/etc/passwd", "to-shadow": "/etc/shadow",
            "up": "../../..", "a/b/c/up": "../../../../../../../..", "to-canary": canary,
            "to-canary-dir": canaryDirectory, "a/b/c/to-canary": "../../../../../../../../../../\(canary)",
        ]
        for (name, target) in links { #expect(symlink(target, "\(root)/\(name)") == 0, "symlink \(name)") }
        return root
    }

    /// Every operation whose FUSE request names the link itself: each must act on the link or fail.
    @Test func symlinksFromTheImageAreNeverFollowed() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        let canary = fixture.work + "/canary", canaryDirectory = fixture.work + "/canary-dir"
        try "canary\n".write(toFile: canary, atomically: false, encoding: .utf8)
        chmod(canary, 0o640)
        try FileManager.default.createDirectory(atPath: canaryDirectory, withIntermediateDirectories: true)
        let root = try Self.hostileTree(in: fixture.work, canary: canary, canaryDirectory: canaryDirectory)
        try fixture.makeImage("links", kind: "whole-ext4", extra: ["--root-dir", root])
        let watched = [canary, canaryDirectory, "/etc", "/etc/passwd", "/etc/shadow", "/root", "/"]
        let before = watched.compactMap(HostSnapshot.init)
        #expect(before.count >= 5)
        try fixture.start()
        let s = fixture.sandbox("links", "s")
        #expect(mkdir(s, 0o755) == 0, "mkdir: \(errnoName(errno))")

        for name in ["to-etc", "to-root", "to-passwd", "to-shadow", "up", "a/b/c/up", "to-canary", "to-canary-dir", "a/b/c/to-canary"] {
            let link = "\(s)/\(name)"
            #expect(FileChecks.stat(link).map { $0.st_mode & S_IFMT == S_IFLNK } == true, "\(name) is a symlink")
            // chown of the link itself (lchown): changes the link.
            #expect(lchown(link, 4321, 4321) == 0, "lchown \(name): \(errnoName(errno))")
            #expect(FileChecks.stat(link)?.st_uid == 4321)
            // chmod of the link itself: Linux has no symlink modes, so it fails (fchmodat NOFOLLOW, and
            // chmod through an O_PATH fd's /proc path, which sends SETATTR for the link's own node).
            #expect(fchmodat(AT_FDCWD, link, 0o777, AT_SYMLINK_NOFOLLOW) == -1)
            let pathFD = open(link, 0o10000000 | O_NOFOLLOW)  // O_PATH
            #expect(pathFD >= 0)
            #expect(chmod("/proc/self/fd/\(pathFD)", 0o777) == -1)
            // truncate of the link itself: refused (the kernel never truncates a symlink).
            #expect(truncate("/proc/self/fd/\(pathFD)", 0) == -1)
            #expect(open(link, O_WRONLY | O_TRUNC | O_NOFOLLOW) == -1 && errno == ELOOP)
            close(pathFD)
            // xattrs on the link itself: user.* is not allowed on symlinks (as on ext4); trusted.* lands on the
            // link, as on ext4, never on its target (the host snapshots below include xattrs).
            let user = try run(["setfattr", "-h", "-n", "user.evil", "-v", "x", link], allowFailure: true)
            #expect(user.status != 0, "lsetxattr user.evil on \(name): \(user.output)")
            let trusted = try run(["setfattr", "-h", "-n", "trusted.evil", "-v", "x", link], allowFailure: true)
            #expect(trusted.status == 0, "lsetxattr trusted.evil on \(name): \(trusted.output)")
            var value: [UInt8] = [0, 0]
            #expect(value.withUnsafeMutableBytes { Posix.lgetxattr(link, "trusted.evil", $0.baseAddress, 2) } == 1 && value[0] == UInt8(ascii: "x"))
            #expect(try run(["setfattr", "-h", "-x", "trusted.evil", link], allowFailure: true).status == 0)
            // Times of the link itself.
            var times = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, link, &times, AT_SYMLINK_NOFOLLOW) == 0, "lutimes \(name): \(errnoName(errno))")
            #expect(FileChecks.stat(link)?.st_mtim.tv_sec == 1_000_000)
            // A hard link to the link is another name for the link.
            let hard = link + ".hard"
            #expect(linkat(AT_FDCWD, link, AT_FDCWD, hard, 0) == 0, "link \(name): \(errnoName(errno))")
            #expect(FileChecks.stat(hard).map { $0.st_mode & S_IFMT == S_IFLNK && $0.st_nlink == 2 } == true)
            // Renaming moves the link; a file renamed over a link replaces the link.
            let moved = link + ".moved"
            #expect(rename(link, moved) == 0, "rename \(name): \(errnoName(errno))")
            #expect(FileChecks.stat(moved).map { $0.st_mode & S_IFMT == S_IFLNK } == true)
            try FileChecks.writeFile(link + ".file", "plain")
            #expect(rename(link + ".file", hard) == 0)
            #expect(FileChecks.stat(hard).map { $0.st_mode & S_IFMT == S_IFREG } == true)
            // Making a name where a link is fails, and unlinking removes the link.
            #expect(mkdir(moved, 0o755) == -1 && errno == EEXIST)
            #expect(unlink(moved) == 0 && unlink(hard) == 0)
        }
        // What the daemon does when asked to create or open *inside* a directory of the sandbox never
        // follows a link at the last component either: O_CREAT|O_EXCL on a link name fails.
        #expect(symlink(canary, "\(s)/fresh-link") == 0)
        #expect(open("\(s)/fresh-link", O_CREAT | O_EXCL | O_WRONLY, 0o644) == -1 && errno == EEXIST)
        #expect(mknod("\(s)/fresh-link", S_IFIFO | 0o644, 0) == -1 && errno == EEXIST)

        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
        let after = watched.compactMap(HostSnapshot.init)
        #expect(after == before, "host files changed: \(zip(before, after).filter { $0 != $1 })")
        #expect(FileChecks.readFile(canary) == "canary\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: canaryDirectory).isEmpty)
    }

    /// nosuid, nodev and default_permissions on the FUSE mount; allow_other unless --private.
    @Test func mountOptions() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start(["--private"])
        let privateLine = try #require(Self.mountinfoLine(fixture.mountpoint))
        #expect(!Self.superOptions(privateLine).contains("allow_other"), "\(privateLine)")
        #expect(Self.superOptions(privateLine).contains("default_permissions"), "\(privateLine)")
        #expect(fixture.stop() == 0)
        try fixture.start()
        let line = try #require(Self.mountinfoLine(fixture.mountpoint))
        let fields = line.split(separator: " ")
        let mountOptions = Set(fields[5].split(separator: ","))
        #expect(mountOptions.isSuperset(of: ["nosuid", "nodev"]), "\(line)")
        #expect(Self.superOptions(line).isSuperset(of: ["default_permissions", "allow_other"]), "\(line)")

        // nodev: a device node made in a sandbox cannot be opened through the mount; nosuid: a set-uid
        // root program run by nobody keeps nobody's uid.
        let s = fixture.sandbox("pi", "s")
        #expect(mkdir(s, 0o755) == 0)
        #expect(mknod("\(s)/null", S_IFCHR | 0o666, Self.makedev(1, 3)) == 0, "mknod: \(errnoName(errno))")
        #expect(open("\(s)/null", O_RDWR) == -1 && errno == EACCES)
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
    }

    static func superOptions(_ line: String) -> Set<Substring> {
        Set(line[line.range(of: " - ")!.upperBound...].split(separator: " ").last!.split(separator: ","))
    }

    static func mountinfoLine(_ mountpoint: String) -> String? {
        let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init).last { $0.split(separator: " ").count > 4 && $0.split(separator: " ")[4] == mountpoint }
    }

    static func makedev(_ major: UInt32, _ minor: UInt32) -> dev_t {
        dev_t(minor & 0xff) | dev_t(major & 0xfff) << 8 | dev_t(minor & ~0xff) << 12 | dev_t(major & ~0xfff) << 32
    }

    /// With --private nobody cannot even look; with allow_other and --group (nobody's group), nobody sees what
    /// the modes allow and cannot make, remove or enter the hidden mounts of sandboxes.
    @Test(.enabled(if: SecuritySuite.canDropPrivileges, "needs setpriv (util-linux)"))
    func unprivilegedUser() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        let root = try Self.hostileTree(in: fixture.work, canary: "/nonexistent", canaryDirectory: "/nonexistent-dir")
        try fixture.makeImage("pi", kind: "whole-ext4", extra: ["--root-dir", root])
        // The fixture's folders must be traversable by nobody for the test to mean anything.
        chmod(fixture.work, 0o755)
        chmod(fixture.mountpoint, 0o755)
        try fixture.start(["--private"])
        let s = fixture.sandbox("pi", "s")
        #expect(mkdir(s, 0o755) == 0)
        #expect(FileChecks.readFile("\(s)/secret") == "for root only\n", "root reads it")
        let denied = try Self.asNobody(["ls", fixture.mountpoint])
        #expect(denied.status != 0 && denied.output.contains("Permission denied"), "\(denied)")
        #expect(fixture.stop() == 0)

        try fixture.start(["--group", Self.nobody.gid])
        let line = try #require(Self.mountinfoLine(fixture.mountpoint))
        #expect(line.contains("allow_other"))
        #expect(mkdir(s, 0o755) == 0)
        let listing = try Self.asNobody(["ls", "\(fixture.mountpoint)/pi/sandboxes"])
        #expect(listing.status == 0 && listing.output == "s\n", "\(listing)")
        let publicFile = try Self.asNobody(["cat", "\(s)/public.txt"])
        #expect(publicFile.status == 0 && publicFile.output == "for everyone\n", "\(publicFile)")
        let secret = try Self.asNobody(["cat", "\(s)/secret"])
        #expect(secret.status != 0 && secret.output.contains("Permission denied"), "\(secret)")
        let write = try Self.asNobody(["touch", "\(s)/etc/owned-by-nobody"])
        #expect(write.status != 0 && write.output.contains("Permission denied"), "\(write)")
        let make = try Self.asNobody(["mkdir", fixture.sandbox("pi", "mine")])
        #expect(make.status != 0 && make.output.contains("Permission denied"), "\(make)")
        let remove = try Self.asNobody(["rmdir", s])
        #expect(remove.status != 0 && remove.output.contains("Permission denied"), "\(remove)")
        #expect(FileChecks.stat(s) != nil, "root's sandbox is still there")
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(fixture.mountpoint)/pi/sandboxes") == ["s"])

        // nosuid: a set-uid-root copy of id(1) in the sandbox, run by nobody, reports nobody.
        #expect(Self.copyfile("/usr/bin/id", "\(s)/suid-id"))
        #expect(chmod("\(s)/suid-id", 0o4755) == 0)
        let id = try Self.asNobody(["\(s)/suid-id", "-u"])
        #expect(id.status == 0 && id.output == "\(Self.nobody.uid)\n", "\(id)")

        // The hidden mounts: 0700 directories of root, closed to nobody.
        let names = InstanceNames(pid: try #require(fixture.pid))
        for directory in [names.runDirectory, names.hiddenMounts] {
            let info = try #require(FileChecks.stat(directory))
            #expect(info.st_mode & 0o7777 == 0o700 && info.st_uid == 0, "\(directory) mode \(String(info.st_mode & 0o7777, radix: 8))")
        }
        let hidden = try Self.asNobody(["ls", names.hiddenMount(image: "pi", sandbox: "s")])
        #expect(hidden.status != 0 && hidden.output.contains("Permission denied"), "\(hidden)")
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
    }

    static func copyfile(_ from: String, _ to: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: from) else { return false }
        return FileManager.default.createFile(atPath: to, contents: data)
    }
}
