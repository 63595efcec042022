import Dispatch
import Foundation
import Glibc
import Synchronization
import Testing
@testable import LinuxBlock

/// An owned fd is closed exactly when its owner lets go, and an FdLease never closes it under a user.
/// Tests run in parallel, so a closed number may already name another file: "closed" is checked as "no
/// longer this file" (its inode).
@Suite struct FileDescriptorTests {
    /// A fresh file of its own in a new directory: the file's path, its inode, the directory.
    static func scratch() throws -> (file: String, inode: ino_t, directory: String) {
        let directory = TestSupport.makeTemporaryDirectory()
        try TestSupport.makeFile(directory + "/f", size: 0)
        var info = stat()
        #expect(stat(directory + "/f", &info) == 0)
        return (directory + "/f", info.st_ino, directory)
    }

    static func names(_ raw: Int32, _ inode: ino_t) -> Bool {
        var info = stat()
        return fstat(raw, &info) == 0 && info.st_ino == inode
    }

    @Test func closesWhenItsOwnerGoesAndNotAfterTake() throws {
        let (file, inode, directory) = try Self.scratch()
        defer { TestSupport.removeTree(directory) }
        var fd = try FileDescriptor.open(file, O_RDONLY)
        let raw = fd.raw
        fd = try FileDescriptor.open(file, O_RDONLY)   // the first one is dropped here
        #expect(!Self.names(raw, inode), "the replaced owner closed its fd")
        let kept = fd.take()
        #expect(Self.names(kept, inode), "take() hands the fd on open")
        close(kept)
    }

    @Test func aDescriptorSetClosesEveryMember() throws {
        let (file, inode, directory) = try Self.scratch()
        defer { TestSupport.removeTree(directory) }
        var set = DescriptorSet()
        let a = set.insert(try FileDescriptor.open(file, O_RDONLY))
        let b = set.insert(try FileDescriptor.open(file, O_RDONLY))
        #expect(Self.names(a, inode) && Self.names(b, inode))
        set.closeAll()
        #expect(!Self.names(a, inode) && !Self.names(b, inode))
    }

    @Test func aRetiredLeaseClosesOnlyAfterItsLastUser() throws {
        let (file, inode, directory) = try Self.scratch()
        defer { TestSupport.removeTree(directory) }
        let lease = FdLease(try FileDescriptor.open(file, O_RDONLY))
        let held = try #require(lease.acquire())
        lease.retire()
        #expect(lease.acquire() == nil, "no new user once retired")
        #expect(Self.names(held, inode), "still open for the user that holds it")
        lease.release()
        #expect(!Self.names(held, inode), "closed by the last release")
        lease.retireAndWait()   // already closed: returns at once
    }

    @Test(.timeLimit(.minutes(1)))
    func retireAndWaitReturnsOnlyOnceTheUserHasReleased() throws {
        let (file, inode, directory) = try Self.scratch()
        defer { TestSupport.removeTree(directory) }
        let lease = FdLease(try FileDescriptor.open(file, O_RDONLY))
        let held = try #require(lease.acquire())
        let returned = DispatchSemaphore(value: 0)
        let closedOnReturn = Atomic<Bool>(false)
        Thread.detachNewThread {
            lease.retireAndWait()
            closedOnReturn.store(!Self.names(held, inode), ordering: .sequentiallyConsistent)
            returned.signal()
        }
        #expect(Self.names(held, inode), "not closed under its user, retired or not")
        lease.release()
        returned.wait()
        let closed = closedOnReturn.load(ordering: .sequentiallyConsistent)
        #expect(closed, "retireAndWait returned with the fd closed")
    }

    /// retire(whenClosed:) returns at once; its work runs once the fd is closed, by the last release, and
    /// at once when the lease is idle or already closed.
    @Test func retireWhenClosedRunsItsWorkOnceTheFdIsClosed() throws {
        let (file, inode, directory) = try Self.scratch()
        defer { TestSupport.removeTree(directory) }
        let lease = FdLease(try FileDescriptor.open(file, O_RDONLY))
        let held = try #require(lease.acquire())
        let closedWhenRun = Mutex<[Bool]>([])
        lease.retire(whenClosed: { closedWhenRun.withLock { $0.append(!Self.names(held, inode)) } })
        #expect(closedWhenRun.withLock { $0 } == [], "ran while a user still held the fd")
        lease.release()
        #expect(closedWhenRun.withLock { $0 } == [true], "the last release closes the fd, then runs the work")
        lease.retire(whenClosed: { closedWhenRun.withLock { $0.append(true) } })
        #expect(closedWhenRun.withLock { $0 } == [true, true], "already closed: runs at once")
        let idle = FdLease(try FileDescriptor.open(file, O_RDONLY))
        let ranIdle = Mutex(false)
        idle.retire(whenClosed: { ranIdle.withLock { $0 = true } })
        #expect(ranIdle.withLock { $0 }, "idle: closes and runs at once")
    }
}
