import Foundation
import Glibc
import Testing

/// Root's share of the COW store (docs/SECURITY.md): uid 1500, already inside a sandbox (a chroot, run),
/// fills it until ENOSPC by every path there is, and root's own 1 MiB write still succeeds. Overlay only: on
/// dm every writer fills the snapshot's store alike.
extension LocalUserSuite {
    /// Writes to `fd`, 1 MiB at a time and then 4 KiB at a time, until a 4 KiB write fails (its errno's
    /// name) or 100 MiB are written.
    static func writeUntilFull(_ fd: Int32) -> String {
        let chunk = [UInt8](repeating: 0x5a, count: 1 << 20)
        var size = chunk.count, total = 0
        while total < 100 << 20 {
            let written = write(fd, chunk, size)
            if written > 0 {
                total += written
            } else if size > 4096 {
                size = 4096
            } else {
                return ErrnoName.of(errno)
            }
        }
        return "100 MiB written"
    }

    /// Opens `name` with `flags` and writes until full: "NAME: ERRNO".
    static func fill(_ name: String, flags: Int32 = O_CREAT | O_WRONLY) -> String {
        let fd = open(name, flags | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return "\(name): open \(ErrnoName.of(errno))" }
        defer { close(fd) }
        return "\(name): \(writeUntilFull(fd))"
    }

    /// Root writes and syncs a new 1 MiB file in `directory`.
    static func expectRootWrites(_ directory: String, _ comment: Comment) throws {
        let root = try run(["dd", "if=/dev/zero", "of=\(directory)/root-file", "bs=1M", "count=1", "conv=fsync"], allowFailure: true)
        #expect(root.status == 0, "\(comment): root's write: \(root)")
        #expect(FileChecks.stat(directory + "/root-file")?.st_size == 1 << 20, comment)
    }

    /// A fresh sandbox with a world-writable /tmp.
    static func sandboxWithTmp(_ fixture: ServeFixture, _ name: String) throws -> String {
        let s = fixture.sandbox("pi", name)
        try #require(mkdir(s, 0o755) == 0, "mkdir \(name): \(String(cString: strerror(errno)))")
        #expect(mkdir(s + "/tmp", 0o1777) == 0 && chmod(s + "/tmp", 0o1777) == 0)
        return s
    }

    /// uid 1500 fills /tmp with plain writes, on a store of ext4 on zram (its reserved blocks) and on the
    /// tmpfs used without zram (no reserve of its own: the daemon keeps 5 % of it).
    @Test(.enabled(if: Environment.engine == "overlay", "the root share is the overlay engine's"), arguments: ["zram", "tmpfs"])
    func aUserFillingASandboxLeavesRootItsShare(store: String) throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        chmod(fixture.work, 0o755)
        chmod(fixture.mountpoint, 0o755)
        let faults = try FaultInjector(in: fixture.work)
        if store == "tmpfs" { try faults.set("no-zram") }
        try fixture.start(["--cow-size", "64M"], environment: faults.environment)
        let s = try Self.sandboxWithTmp(fixture, "s")
        #expect(try fixture.status().first?["cow_store"] as? String == store)
        let fill = Posix.asUser(1500, 1500, in: s + "/tmp") { () -> Outcome in
            var o = Outcome()
            o.note(Self.fill("fill"))
            o.note(Self.fill("more"))
            return o
        }
        #expect(fill.description == "fill: ENOSPC\nmore: ENOSPC", "\(fill)")
        try Self.expectRootWrites(s, "\(store)")
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
    }

    /// Writes that would skip the check on a file already passing through: the user's own file, held open
    /// for reading (a read of 1 MiB or more passes through), then opened for writing; and a file anyone may
    /// write that root holds open for writing. Each in a sandbox of its own. A file root holds open through
    /// passthrough and makes writable for others only then: their open for writing is refused (ETXTBSY).
    @Test(.enabled(if: Environment.engine == "overlay" && PassthroughSuite.expectPassthrough,
                   "the root share is the overlay engine's; passthrough needs kernel 6.9+ and libfuse 3.17+"))
    func aUserWritingAFileOpenThroughPassthroughLeavesRootItsShare() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        chmod(fixture.work, 0o755)
        chmod(fixture.mountpoint, 0o755)
        try fixture.start(["--cow-size", "64M"])

        let own = try Self.sandboxWithTmp(fixture, "own")
        let ownFill = Posix.asUser(1500, 1500, in: own + "/tmp") { () -> Outcome in
            var o = Outcome()
            let fd = open("own", O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
            let chunk = [UInt8](repeating: 1, count: 2 << 20)
            guard fd >= 0, write(fd, chunk, chunk.count) == chunk.count, close(fd) == 0 else { return Outcome(encoded: "own: \(ErrnoName.of(errno))") }
            let reader = open("own", O_RDONLY | O_CLOEXEC)
            o.note(reader >= 0 ? "reading" : "read open \(ErrnoName.of(errno))")
            o.note(Self.fill("own", flags: O_WRONLY | O_APPEND))
            close(reader)
            return o
        }
        #expect(ownFill.description == "reading\nown: ENOSPC", "\(ownFill)")
        try Self.expectRootWrites(own, "the user's own file held open for reading")
        #expect(rmdir(own) == 0)

        let shared = try Self.sandboxWithTmp(fixture, "shared")
        let late = shared + "/tmp/late"
        let lateFD = open(late, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
        #expect(lateFD >= 0 && chmod(late, 0o666) == 0)
        let lateOpen = Posix.asUser(1500, 1500, in: shared + "/tmp") { () -> Outcome in
            var o = Outcome()
            let reader = open("late", O_RDONLY | O_CLOEXEC)
            o.note(reader >= 0 ? "read open" : "read open \(ErrnoName.of(errno))")
            let writer = open("late", O_WRONLY | O_CLOEXEC)
            o.note(writer >= 0 ? "write open" : "write open \(ErrnoName.of(errno))")
            return o
        }
        close(lateFD)
        #expect(lateOpen.description == "read open\nwrite open ETXTBSY", "\(lateOpen)")
        #expect(FileManager.default.createFile(atPath: shared + "/tmp/shared", contents: nil, attributes: [.posixPermissions: 0o666]))
        let sharedFD = open(shared + "/tmp/shared", O_WRONLY | O_CLOEXEC)
        #expect(sharedFD >= 0)
        let sharedFill = Posix.asUser(1500, 1500, in: shared + "/tmp") { () -> Outcome in
            var o = Outcome()
            o.note(Self.fill("shared", flags: O_WRONLY))
            return o
        }
        close(sharedFD)
        #expect(sharedFill.description == "shared: ENOSPC", "\(sharedFill)")
        try Self.expectRootWrites(shared, "a file anyone may write, open for writing by root")

        #expect(rmdir(shared) == 0)
        #expect(fixture.stop() == 0)
    }

    /// Pages of a shared writable mapping reach the daemon as WRITE requests that the kernel's flusher
    /// threads send as root: they are judged by who opened the file for writing.
    @Test(.enabled(if: Environment.engine == "overlay", "the root share is the overlay engine's"))
    func aUserWritingThroughASharedMappingLeavesRootItsShare() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        chmod(fixture.work, 0o755)
        chmod(fixture.mountpoint, 0o755)
        try fixture.start(["--cow-size", "64M"])
        let s = try Self.sandboxWithTmp(fixture, "s")
        let mapped = Posix.asUser(1500, 1500, in: s + "/tmp") { () -> Outcome in
            var o = Outcome()
            let size = 100 << 20
            let fd = open("mapped", O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
            guard fd >= 0, ftruncate(fd, off_t(size)) == 0 else { return Outcome(encoded: "mapped: \(ErrnoName.of(errno))") }
            guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), base != MAP_FAILED else {
                return Outcome(encoded: "mmap: \(ErrnoName.of(errno))")
            }
            memset(base, 0x5a, size)
            munmap(base, size)
            o.note("close: \(close(fd) == 0 ? "ok" : ErrnoName.of(errno))")
            return o
        }
        #expect(mapped.description.hasPrefix("close:"), "\(mapped)")
        try Self.expectRootWrites(s, "after the mapping's writeback")
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
    }

    /// A FAT partition that fstab opens to everyone (umask=000): uid 1500 fills it, root still writes there
    /// (5 % of its clusters are root's).
    @Test func aUserFillingAFATPartitionLeavesRootItsShare() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        chmod(fixture.work, 0o755)
        chmod(fixture.mountpoint, 0o755)
        let root = fixture.work + "/root"
        try FileManager.default.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/boot/firmware", withIntermediateDirectories: true)
        try "raspberrypi\n".write(toFile: root + "/etc/hostname", atomically: false, encoding: .utf8)
        try """
            PARTUUID=6c586e13-01 /boot/firmware vfat defaults,umask=000 0 2
            PARTUUID=6c586e13-02 / ext4 defaults,noatime 0 1

            """.write(toFile: root + "/etc/fstab", atomically: false, encoding: .utf8)
        try fixture.makeImage("pi", kind: "rpi", extra: ["--root-dir", root])
        try fixture.start()
        let s = fixture.sandbox("pi", "s")
        #expect(mkdir(s, 0o755) == 0)
        chmod(s + "/boot", 0o755)
        let fill = Posix.asUser(1500, 1500, in: s + "/boot/firmware") { () -> Outcome in
            var o = Outcome()
            o.note(Self.fill("fill"))
            o.note(Self.fill("more"))
            var made = 0
            while made < 10_000, mkdir("d\(made)", 0o755) == 0 { made += 1 }
            o.note("mkdir: \(made < 10_000 ? ErrnoName.of(errno) : "10000 made")")
            return o
        }
        #expect(fill.description == "fill: ENOSPC\nmore: ENOSPC\nmkdir: ENOSPC", "\(fill)")
        try Self.expectRootWrites(s + "/boot/firmware", "FAT")
        #expect(rmdir(s) == 0)
        #expect(fixture.stop() == 0)
    }
}
