import Glibc
import Testing
@testable import DiskImage

@Suite("FileByteSource")
struct FileByteSourceTests {
    static func write(_ bytes: [UInt8], to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        try #require(fd >= 0)
        defer { close(fd) }
        try #require(bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count)
    }

    @Test func readsWhatWasWritten() throws {
        let dir = ScratchDirectory()
        let bytes = (0..<3000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try Self.write(bytes, to: dir.path + "/img")
        let src = try FileByteSource(path: dir.path + "/img")
        #expect(src.size == 3000)
        #expect(try src.read(at: 1000, count: 100) == Array(bytes[1000..<1100]))
        #expect(try src.read(at: 3000, count: 0) == [])
        #expect(throws: DiskImageError.readBeyondEnd(offset: 2990, count: 11, size: 3000)) {
            try src.read(at: 2990, count: 11)
        }
        #expect(throws: DiskImageError.readBeyondEnd(offset: .max, count: 2, size: 3000)) {
            try src.read(at: .max, count: 2)
        }
    }

    @Test func borrowedDescriptorIsNotClosed() throws {
        let dir = ScratchDirectory()
        try Self.write([1, 2, 3, 4], to: dir.path + "/img")
        let fd = open(dir.path + "/img", O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        do {
            let src = try FileByteSource(fd: fd)
            #expect(try src.read(at: 2, count: 2) == [3, 4])
        }
        #expect(fcntl(fd, F_GETFD) >= 0)  // still open after the source is gone
    }

    @Test func refusesSymlinkAndMissingFile() throws {
        let dir = ScratchDirectory()
        try Self.write([0], to: dir.path + "/img")
        try #require(symlink(dir.path + "/img", dir.path + "/link") == 0)
        #expect(throws: DiskImageError.openFailed(path: dir.path + "/link", errno: ELOOP)) {
            try FileByteSource(path: dir.path + "/link")
        }
        #expect(throws: DiskImageError.openFailed(path: dir.path + "/missing", errno: ENOENT)) {
            try FileByteSource(path: dir.path + "/missing")
        }
        #expect(DiskImageError.openFailed(path: "x", errno: ENOENT).errno == ENOENT)
    }

    @Test func readErrorCarriesErrno() throws {
        let dir = ScratchDirectory()
        try Self.write([UInt8](repeating: 0, count: 1024), to: dir.path + "/img")
        // A write-only descriptor: lseek works, pread fails with EBADF.
        let fd = open(dir.path + "/img", O_WRONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        let src = try FileByteSource(fd: fd)
        #expect(throws: DiskImageError.readFailed(offset: 0, count: 512, errno: EBADF)) { try src.read(at: 0, count: 512) }
        #expect(DiskImageError.readFailed(offset: 0, count: 512, errno: EBADF).errno == EIO)
    }

    @Test func truncatedWhileOpenIsShortRead() throws {
        let dir = ScratchDirectory()
        try Self.write([UInt8](repeating: 9, count: 2048), to: dir.path + "/img")
        let src = try FileByteSource(path: dir.path + "/img")
        try #require(truncate(dir.path + "/img", 1500) == 0)
        #expect(throws: DiskImageError.shortRead(offset: 1024, wanted: 1024, got: 476)) { try src.read(at: 1024, count: 1024) }
    }
}
