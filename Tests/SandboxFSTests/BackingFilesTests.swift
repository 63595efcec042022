import Glibc
import Testing
@testable import SandboxFS

/// The I/O mode of each open inode, against a fake kernel that hands out backing ids and takes closes.
@Suite struct BackingFilesTests {
    final class FakeKernel {
        var next: Int32 = 1
        var live: Set<Int32> = []

        func register() -> Int32 {
            defer { next += 1 }
            live.insert(next)
            return next
        }

        func close(_ id: Int32) -> Int32 { live.remove(id) == nil ? -EBADF : 0 }
    }

    static let small = 4096
    static let big = BackingFiles().cachedReadLimit

    @Test func smallReadOnlyOpensAreCachedEverythingElsePassesThrough() throws {
        let kernel = FakeKernel()
        let modes = BackingFiles()
        #expect(try modes.acquire(node: 1, flags: O_RDONLY, size: Self.small, register: kernel.register) == 0)
        #expect(try modes.acquire(node: 2, flags: O_RDONLY, size: Self.big, register: kernel.register) > 0)
        #expect(try modes.acquire(node: 3, flags: O_WRONLY, size: 0, register: kernel.register) > 0)
        #expect(try modes.acquire(node: 4, flags: O_RDWR, size: Self.small, register: kernel.register) > 0)
        #expect(try modes.acquire(node: 5, flags: O_RDONLY | O_TRUNC, size: 0, register: kernel.register) > 0)
        #expect(kernel.live.count == 4 && modes.openCount == 5)
    }

    /// The kernel refuses a cached open of an inode whose open files pass through, and the reverse.
    @Test func laterOpensShareTheModeOfTheOpenFiles() throws {
        let kernel = FakeKernel()
        let modes = BackingFiles()
        #expect(try modes.acquire(node: 1, flags: O_RDONLY, size: Self.small, register: kernel.register) == 0)
        #expect(try modes.acquire(node: 1, flags: O_RDWR, size: Self.small, register: kernel.register) == 0)
        #expect(kernel.live.isEmpty)
        let writer = try modes.acquire(node: 2, flags: O_WRONLY, size: Self.big, register: kernel.register)
        #expect(try modes.acquire(node: 2, flags: O_RDONLY, size: Self.small, register: kernel.register) == writer)
        #expect(kernel.live == [writer])
        // The id closes at the last release, not before; then the next open chooses afresh.
        modes.release(node: 2, closeID: kernel.close)
        #expect(kernel.live == [writer])
        modes.release(node: 2, closeID: kernel.close)
        #expect(kernel.live.isEmpty)
        #expect(try modes.acquire(node: 2, flags: O_RDONLY, size: Self.small, register: kernel.register) == 0)
        for _ in 0..<2 { modes.release(node: 1, closeID: kernel.close) }
        #expect(try modes.acquire(node: 1, flags: O_WRONLY, size: Self.small, register: kernel.register) > 0)
    }

    @Test func aRefusedBackingFileThrowsAndTheOpenGoesThroughTheDaemon() throws {
        let modes = BackingFiles()
        #expect(throws: (any Error).self) { try modes.acquire(node: 1, flags: O_WRONLY, size: 0) { -ELOOP } }
        #expect(modes.openCount == 0)
        modes.cachedOpen(node: 1)
        // Its other opens share the cached mode without asking the kernel again.
        #expect(try modes.acquire(node: 1, flags: O_WRONLY, size: 0) { -ELOOP } == 0)
        var closes = 0
        modes.release(node: 1) { _ in closes += 1; return 0 }
        modes.release(node: 1) { _ in closes += 1; return 0 }
        #expect(modes.openCount == 0 && closes == 0)
    }
}
