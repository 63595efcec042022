import Glibc
import LinuxBlock
import Testing
@testable import Sandbox

/// The undo stack: newest first; a failing step stops the run and stays, with the steps below it, for the
/// next run; `partial` says whether some step was undone before it.
struct TeardownTests {
    // @unchecked: only the test's own thread touches it (a teardown runs its steps on the caller's thread).
    final class Log: @unchecked Sendable {
        var entries: [String] = []
        var failing: Set<String> = []
    }

    @Test func aFailureStopsTheRunAndTheNextRunResumesThere() throws {
        let log = Log()
        let teardown = Teardown()
        for name in ["remove zram", "remove mount point", "unmount upper"] {
            teardown.push(name) {
                log.entries.append(name)
                if log.failing.contains(name) { throw SystemError("step", name, errno: EBUSY) }
            }
        }
        log.failing = ["unmount upper"]
        do { try teardown.run() } catch { #expect(!error.partial && error.step == "unmount upper") }
        #expect(!teardown.hasUndone)
        log.failing = ["remove zram"]
        do { try teardown.run() } catch { #expect(error.partial && error.step == "remove zram") }
        #expect(teardown.hasUndone)
        log.failing = []
        try teardown.run()
        #expect(log.entries == ["unmount upper", "unmount upper", "remove mount point", "remove zram", "remove zram"])
        try teardown.run() // nothing left
        #expect(log.entries.count == 5)
    }
}

/// Teardown.own: the fd is closed at its step, and by a teardown dropped without running.
struct TeardownOwnsDescriptorsTests {
    static func inode(_ raw: Int32) -> ino_t? {
        var info = stat()
        return fstat(raw, &info) == 0 ? info.st_ino : nil
    }

    @Test func anOwnedFdClosesAtItsStepOrWhenTheTeardownIsDropped() throws {
        let path = "/proc/self/exe"
        var expected = stat()
        #expect(stat(path, &expected) == 0)
        let teardown = Teardown()
        let raw = teardown.own(try FileDescriptor.open(path, O_RDONLY), path)
        #expect(Self.inode(raw) == expected.st_ino)
        try teardown.run()
        #expect(Self.inode(raw) != expected.st_ino, "closed by its step")

        var dropped: Teardown? = Teardown()
        let other = dropped!.own(try FileDescriptor.open(path, O_RDONLY), path)
        #expect(Self.inode(other) == expected.st_ino)
        dropped = nil
        #expect(Self.inode(other) != expected.st_ino, "closed with the teardown that never ran")
    }
}

/// The overlay engine's block store where the kernel has no zram: an unlinked scratch file, owned by the
/// teardown and close-on-exec from birth, so no helper the daemon spawns inherits it.
struct ScratchBlockStoreTests {
    @Test func theScratchStoreIsCloseOnExecAndClosedByItsTeardown() throws {
        let root = "/tmp/imgsandbox-blockstore-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let names = InstanceNames(pid: 1, runRoot: root)
        #expect(mkdir(root, 0o700) == 0 && mkdir(names.runDirectory, 0o700) == 0)
        defer { rmdir(names.runDirectory); rmdir(root) }
        let engine = OverlayEngine(names: names, zram: Zram(sysfsRoot: root + "/no-sysfs"))
        let teardown = Teardown()
        let fd = try engine.makeBlockStore(bytes: 1 << 20, teardown: teardown)
        #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0, "a spawned helper would inherit the store")
        var info = stat()
        #expect(fstat(fd, &info) == 0 && info.st_nlink == 0, "unlinked: nothing left in the run directory")
        try teardown.run()
        var after = stat()
        #expect(fstat(fd, &after) != 0 || after.st_ino != info.st_ino, "closed by its teardown step")
    }
}
