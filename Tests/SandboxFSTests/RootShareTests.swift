import Glibc
import Testing
@testable import SandboxFS

/// Root's share: the room left to users other than root, and which files may pass through.
@Suite struct RootShareTests {
    @Test func anExt4ReserveOfFivePercentIsTheShare() {
        // 10,000 blocks, 600 free, 100 of them for users (ext4 keeps 500 for root): nothing more is kept.
        #expect(SandboxFileSystem.userRoom(blocks: 10_000, free: 600, available: 100, blockSize: 4096) == 100 * 4096)
    }

    @Test func aFilesystemWithoutReserveKeepsFivePercentForRoot() {
        // tmpfs, FAT: free == available. 500 of 10,000 blocks are root's.
        #expect(SandboxFileSystem.userRoom(blocks: 10_000, free: 600, available: 600, blockSize: 512) == 100 * 512)
        #expect(SandboxFileSystem.userRoom(blocks: 10_000, free: 400, available: 400, blockSize: 512) == 0)
        // A smaller reserve of its own is topped up to the share.
        #expect(SandboxFileSystem.userRoom(blocks: 10_000, free: 600, available: 400, blockSize: 1) == 100)
    }

    @Test func onlyFilesOnlyRootMayWritePassThrough() {
        func file(uid: uid_t, mode: mode_t) -> stat {
            var st = stat()
            st.st_uid = uid
            st.st_mode = UInt32(S_IFREG) | mode
            return st
        }
        #expect(SandboxFileSystem.onlyRootWrites(file(uid: 0, mode: 0o755)))
        #expect(SandboxFileSystem.onlyRootWrites(file(uid: 0, mode: 0o4755)))
        #expect(!SandboxFileSystem.onlyRootWrites(file(uid: 1000, mode: 0o644)))
        #expect(!SandboxFileSystem.onlyRootWrites(file(uid: 0, mode: 0o664)))
        #expect(!SandboxFileSystem.onlyRootWrites(file(uid: 0, mode: 0o646)))
    }

    @Test func userWritersCountEachHandleOfANode() {
        let writers = UserWriters()
        writers.add(fh: 1, node: 7)
        writers.add(fh: 2, node: 7)
        writers.remove(fh: 1)
        #expect(writers.contains(node: 7))
        writers.remove(fh: 2)
        writers.remove(fh: 3)   // not a user's writer: nothing changes
        #expect(!writers.contains(node: 7))
    }
}
