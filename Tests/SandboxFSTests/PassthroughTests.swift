import CLinux
import Foundation
import Glibc
import TestSupport
import Testing
@testable import SandboxFS

/// POSIX behaviour inside a sandbox, checked through FUSE and, where it matters, in the backing directory.
extension SandboxFSTests {
    /// A mounted filesystem with one sandbox `alpha/sandboxes/s`; returns (mount, sandbox path, backing path).
    private func withSandbox(options: FileSystemOptions = FileSystemOptions(),
                             _ body: (MountedFS, String, String) throws -> Void) throws {
        let m = try MountedFS(options: options)
        defer { m.stop() }
        try #require(mkdir(m.path("alpha/sandboxes/s"), 0o755) == 0)
        let backing = try #require(m.provider.sandbox(image: "alpha", name: "s")?.mountPath)
        try body(m, m.path("alpha/sandboxes/s"), backing)
    }

    @Test("files and directories pass through", arguments: [false, true])
    func filesAndDirectoriesPassThrough(splice: Bool) throws {
        var options = FileSystemOptions()
        options.splice = splice
        try withSandbox(options: options) { _, s, backing in
            try "hello".write(toFile: s + "/a.txt", atomically: false, encoding: .utf8)
            #expect(readAll(backing + "/a.txt") == "hello")
            try "from below".write(toFile: backing + "/b.txt", atomically: false, encoding: .utf8)
            #expect(readAll(s + "/b.txt") == "from below")
            #expect(mkdir(s + "/d", 0o750) == 0)
            #expect(lstatOf(backing + "/d").map { $0.st_mode & 0o7777 } == 0o750)
            try "x".write(toFile: s + "/d/inner", atomically: false, encoding: .utf8)
            #expect(try FileManager.default.contentsOfDirectory(atPath: s).sorted() == ["a.txt", "b.txt", "d"])
            #expect(errnoOf(rmdir(s + "/d")) == ENOTEMPTY)
            #expect(unlink(s + "/d/inner") == 0)
            #expect(rmdir(s + "/d") == 0)
            #expect(!FileManager.default.fileExists(atPath: backing + "/d"))
            #expect(errnoOf(mkdir(s + "/a.txt", 0o755)) == EEXIST)
            // Large write and read back (several max_write chunks).
            let big = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            try big.write(to: URL(fileURLWithPath: s + "/big"))
            #expect(FileManager.default.contents(atPath: backing + "/big") == big)
            #expect(FileManager.default.contents(atPath: s + "/big") == big)
        }
    }

    @Test func symlinksAreNeverFollowedByTheDaemon() throws {
        try withSandbox { _, s, backing in
            #expect(symlink("../../../../etc/passwd", s + "/link") == 0)
            let st = try #require(lstatOf(s + "/link"))
            #expect(st.st_mode & UInt32(S_IFMT) == UInt32(S_IFLNK))
            var buffer = [CChar](repeating: 0, count: 256)
            let n = readlink(s + "/link", &buffer, buffer.count)
            #expect(n > 0 && String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) == "../../../../etc/passwd")
            #expect(lstatOf(backing + "/link").map { $0.st_mode & UInt32(S_IFMT) } == UInt32(S_IFLNK))
            #expect(errnoOf(fd: open(s + "/link", O_RDONLY | O_NOFOLLOW)) == ELOOP)
            // A symlink to a directory inside: lookups through it are the kernel's, relative to the sandbox.
            #expect(mkdir(s + "/real", 0o755) == 0)
            #expect(symlink("real", s + "/alias") == 0)
            try "r".write(toFile: s + "/alias/file", atomically: false, encoding: .utf8)
            #expect(readAll(backing + "/real/file") == "r")
            // "." and ".." as names never climb out of the sandbox root.
            #expect(try FileManager.default.contentsOfDirectory(atPath: s + "/..") == ["s"])
        }
    }

    @Test func hardLinksAndRenameFlags() throws {
        try withSandbox { _, s, _ in
            try "one".write(toFile: s + "/one", atomically: false, encoding: .utf8)
            try "two".write(toFile: s + "/two", atomically: false, encoding: .utf8)
            #expect(link(s + "/one", s + "/one-again") == 0)
            #expect(lstatOf(s + "/one")?.st_nlink == 2)
            #expect(lstatOf(s + "/one-again")?.st_nlink == 2)
            #expect(lstatOf(s + "/one")?.st_ino == lstatOf(s + "/one-again")?.st_ino)
            #expect(errnoOf(clinux_renameat2(AT_FDCWD, s + "/one", AT_FDCWD, s + "/two", clinux_RENAME_NOREPLACE)) == EEXIST)
            #expect(clinux_renameat2(AT_FDCWD, s + "/one", AT_FDCWD, s + "/two", clinux_RENAME_EXCHANGE) == 0)
            #expect(readAll(s + "/one") == "two")
            #expect(readAll(s + "/two") == "one")
            #expect(rename(s + "/two", s + "/three") == 0)
            #expect(readAll(s + "/three") == "one")
            #expect(unlink(s + "/one-again") == 0)
            #expect(lstatOf(s + "/three")?.st_nlink == 1)
        }
    }

    @Test func attributesModeOwnerTimesSize() throws {
        try withSandbox { _, s, backing in
            try "0123456789".write(toFile: s + "/f", atomically: false, encoding: .utf8)
            #expect(chmod(s + "/f", 0o640) == 0)
            #expect(lstatOf(backing + "/f").map { $0.st_mode & 0o7777 } == 0o640)
            #expect(chown(s + "/f", 1234, 5678) == 0)
            #expect(lstatOf(backing + "/f").map { ($0.st_uid, $0.st_gid) } .map { $0 == 1234 && $1 == 5678 } == true)
            #expect(lchown(s + "/f", UInt32.max, 42) == 0)
            #expect(lstatOf(s + "/f")?.st_uid == 1234)
            #expect(lstatOf(s + "/f")?.st_gid == 42)
            let before = try #require(lstatOf(backing + "/f"))
            var times = [timespec(tv_sec: 0, tv_nsec: clinux_UTIME_OMIT), timespec(tv_sec: 1_000_000, tv_nsec: 5)]
            #expect(utimensat(AT_FDCWD, s + "/f", &times, 0) == 0)
            let after = try #require(lstatOf(backing + "/f"))
            #expect(after.st_mtim.tv_sec == 1_000_000 && after.st_mtim.tv_nsec == 5)
            #expect(after.st_atim.tv_sec == before.st_atim.tv_sec && after.st_atim.tv_nsec == before.st_atim.tv_nsec)
            #expect(truncate(s + "/f", 4) == 0)
            #expect(readAll(backing + "/f") == "0123")
            let fd = open(s + "/f", O_RDWR)
            #expect(fd >= 0)
            #expect(ftruncate(fd, 2) == 0)
            close(fd)
            #expect(lstatOf(backing + "/f")?.st_size == 2)
            // Symlink times without following it.
            #expect(symlink("f", s + "/l") == 0)
            var linkTimes = [timespec(tv_sec: 2_000_000, tv_nsec: 0), timespec(tv_sec: 2_000_000, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, s + "/l", &linkTimes, AT_SYMLINK_NOFOLLOW) == 0)
            #expect(lstatOf(backing + "/l")?.st_mtim.tv_sec == 2_000_000)
            #expect(lstatOf(backing + "/f")?.st_mtim.tv_sec != 2_000_000)
        }
    }

    @Test func extendedAttributes() throws {
        try withSandbox { _, s, backing in
            try "x".write(toFile: s + "/f", atomically: false, encoding: .utf8)
            #expect(clinux_setxattr(s + "/f", "user.note", "hi", 2, 0) == 0)
            var buffer = [UInt8](repeating: 0, count: 64)
            #expect(clinux_getxattr(backing + "/f", "user.note", &buffer, buffer.count) == 2)
            #expect(clinux_getxattr(s + "/f", "user.note", nil, 0) == 2)
            // File capabilities (VFS_CAP_REVISION_2, cap_net_raw permitted+effective).
            let cap: [UInt8] = [0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            #expect(clinux_setxattr(s + "/f", "security.capability", cap, cap.count, 0) == 0)
            var readBack = [UInt8](repeating: 0, count: 64)
            let n = clinux_getxattr(s + "/f", "security.capability", &readBack, readBack.count)
            #expect(n == cap.count && Array(readBack.prefix(cap.count)) == cap)
            var list = [CChar](repeating: 0, count: 256)
            let listed = clinux_listxattr(s + "/f", &list, list.count)
            let names = String(decoding: list.prefix(max(listed, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                .split(separator: "\0").map(String.init)
            #expect(names.contains("user.note") && names.contains("security.capability"))
            #expect(clinux_removexattr(s + "/f", "user.note") == 0)
            #expect(errnoOf(clinux_getxattr(s + "/f", "user.note", &buffer, buffer.count)) == ENODATA)
            #expect(errnoOf(clinux_setxattr(s + "/f", "user.other", "1", 1, 1 /* XATTR_CREATE */)) == 0)
            #expect(errnoOf(clinux_setxattr(s + "/f", "user.other", "1", 1, 1 /* XATTR_CREATE */)) == EEXIST)
        }
    }

    @Test func fallocateSeekHoleFifoStatfs() throws {
        try withSandbox { _, s, backing in
            let fd = open(s + "/sparse", O_CREAT | O_RDWR, 0o644)
            try #require(fd >= 0)
            defer { close(fd) }
            let block = [UInt8](repeating: 0xAB, count: 4096)
            #expect(pwrite(fd, block, block.count, 0) == 4096)
            #expect(pwrite(fd, block, block.count, 1 << 20) == 4096)
            #expect(fsync(fd) == 0)
            #expect(lseek(fd, 0, clinux_SEEK_HOLE) == 4096)
            #expect(lseek(fd, 4096, clinux_SEEK_DATA) == 1 << 20)
            #expect(clinux_fallocate(fd, 0, 8192, 65536) == 0)
            #expect(clinux_fallocate(fd, clinux_FALLOC_FL_PUNCH_HOLE | clinux_FALLOC_FL_KEEP_SIZE, 0, 4096) == 0)
            #expect(lseek(fd, 0, clinux_SEEK_DATA) >= 4096)
            #expect(lstatOf(backing + "/sparse")?.st_size == (1 << 20) + 4096)

            #expect(mkfifo(s + "/pipe", 0o600) == 0)
            #expect(lstatOf(backing + "/pipe").map { $0.st_mode & UInt32(S_IFMT) } == UInt32(S_IFIFO))
            #expect(mknod(s + "/null", UInt32(S_IFCHR) | 0o666, devNull) == 0)
            #expect(lstatOf(backing + "/null").map { $0.st_mode & UInt32(S_IFMT) } == UInt32(S_IFCHR))

            var through = statvfs()
            var direct = statvfs()
            #expect(statvfs(s, &through) == 0)
            #expect(statvfs(backing, &direct) == 0)
            #expect(through.f_blocks == direct.f_blocks && through.f_bsize == direct.f_bsize)

            let copy = open(s + "/copy", O_CREAT | O_RDWR, 0o644)
            try #require(copy >= 0)
            defer { close(copy) }
            var inOff: Int64 = 1 << 20
            var outOff: Int64 = 0
            #expect(clinux_copy_file_range(fd, &inOff, copy, &outOff, 4096, 0) == 4096)
            #expect(FileManager.default.contents(atPath: backing + "/copy") == Data(block))
        }
    }

    @Test func newFilesBelongToTheCaller() throws {
        var options = FileSystemOptions()
        options.allowOther = true // without it the kernel lets only the mounting user in
        try withSandbox(options: options) { m, s, backing in
            #expect(chmod(m.root, 0o755) == 0) // mkdtemp made it 0700
            #expect(chmod(s, 0o777) == 0)
            let pid = fork()
            if pid == 0 {
                // Child: enter the sandbox as root (the tree above it is root's), as a chroot does, then
                // become an ordinary user and create things.
                guard chdir(s) == 0, setgid(4321) == 0, setuid(1234) == 0 else { _exit(10) }
                let fd = creat("mine", 0o644)
                guard fd >= 0 else { _exit(11) }
                close(fd)
                guard mkdir("mydir", 0o755) == 0 else { _exit(12) }
                guard symlink("mine", "mylink") == 0 else { _exit(13) }
                // Device nodes are root's only.
                guard mknod("dev", UInt32(S_IFCHR) | 0o600, devNull) != 0, errno == EPERM else { _exit(14) }
                _exit(0)
            }
            var status: Int32 = 0
            #expect(waitpid(pid, &status, 0) == pid)
            #expect(status == 0, "child exit code \(status >> 8)")
            for name in ["mine", "mydir", "mylink"] {
                let st = lstatOf(backing + "/" + name)
                #expect(st?.st_uid == 1234 && st?.st_gid == 4321, "\(name)")
            }
        }
    }

    /// A readdirplus registers its entries on helper threads and sizes the reply before it has them: every
    /// entry of a directory the kernel has never seen (names of every length, so the records straddle its
    /// buffers in every way; every type) must come back once, with the attributes and the inode number of
    /// the entry it names, as lstat on the hidden mount gives them.
    @Test func readdirplusListsEveryEntryWithItsAttributes() throws {
        try withSandbox { m, s, backing in
            let dir = backing + "/listed"
            try #require(mkdir(dir, 0o755) == 0)
            var expected: [String: stat] = [:]
            for index in 0..<1_500 {
                let length = 1 + index % 255
                let stem = "\(index)-"
                let name = stem + String(repeating: "x", count: max(length - stem.count, 0))
                let path = dir + "/" + name
                switch index % 4 {
                case 0: try String(repeating: "d", count: index).write(toFile: path, atomically: false, encoding: .utf8)
                case 1: try #require(mkdir(path, 0o700) == 0)
                case 2: try #require(symlink("target-\(index)", path) == 0)
                default: try #require(mkfifo(path, 0o640) == 0)
                }
                expected[name] = try #require(lstatOf(path))
            }
            let readdirplusBefore = m.fs.requestCounts.snapshot["readdirplus"] ?? 0
            let stream = try #require(opendir(s + "/listed"))
            var seen: [String: (type: UInt8, ino: UInt64)] = [:]
            var repeated = 0
            while let entry = readdir(stream) {
                let name = withUnsafePointer(to: &entry.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                }
                if name == "." || name == ".." { continue }
                if seen[name] != nil { repeated += 1 }
                seen[name] = (entry.pointee.d_type, UInt64(entry.pointee.d_ino))
            }
            closedir(stream)
            #expect(repeated == 0)
            #expect(Set(seen.keys) == Set(expected.keys))
            #expect((m.fs.requestCounts.snapshot["readdirplus"] ?? 0) > readdirplusBefore + 1, "several readdirplus replies")
            let lookupsBefore = m.fs.requestCounts.snapshot["lookup"] ?? 0
            var mismatches: [String] = []
            for (name, want) in expected.sorted(by: { $0.key < $1.key }) {
                guard let got = lstatOf(s + "/listed/" + name), let listed = seen[name] else {
                    mismatches.append("\(name.prefix(12)): missing")
                    continue
                }
                if got.st_mode != want.st_mode || got.st_size != want.st_size || got.st_nlink != want.st_nlink
                    || UInt32(listed.type) != (want.st_mode & UInt32(S_IFMT)) >> 12 || UInt64(got.st_ino) != listed.ino {
                    mismatches.append("\(name.prefix(12)): mode \(got.st_mode) size \(got.st_size) d_type \(listed.type)")
                }
            }
            #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
            // Each lstat found the entry the listing registered: no LOOKUP reached the daemon.
            #expect((m.fs.requestCounts.snapshot["lookup"] ?? 0) == lookupsBefore)
        }
    }

    @Test func bigTreeStaysWithinFdBudget() throws {
        try withSandbox { m, s, backing in
            // 100,000 files in 100 directories, made directly in the backing directory.
            for d in 0..<100 {
                let dir = backing + "/d\(d)"
                try #require(mkdir(dir, 0o755) == 0)
                for f in 0..<1000 {
                    let fd = open(dir + "/f\(f)", O_CREAT | O_WRONLY, 0o644)
                    try #require(fd >= 0)
                    close(fd)
                }
            }
            let baseline = MountedFS.openFDCount()
            let (findStatus, found) = try run(["find", s, "-type", "f"])
            #expect(findStatus == 0)
            #expect(found.split(separator: "\n").count == 100_000)
            let (duStatus, du) = try run(["du", "-s", "--inodes", s])
            #expect(duStatus == 0)
            #expect(du.split(separator: "\t").first.flatMap { Int($0) } ?? 0 >= 100_101)
            let known = m.fs.registry.passNodeCount
            let fds = MountedFS.openFDCount()
            #expect(known > 20_000, "the kernel holds more inodes than the fd limit allows")
            #expect(fds < 2_000, "open fds: \(fds) (baseline \(baseline))")
            #expect(m.fs.cache.count <= m.fs.cache.capacity)
        }
    }
}

/// makedev(1, 3) (/dev/null) in the kernel's encoding for small numbers: major << 8 | minor.
private let devNull: dev_t = (1 << 8) | 3
