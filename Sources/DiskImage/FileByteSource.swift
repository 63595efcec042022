import Glibc

/// An image file or block device read with pread. Thread-safe: pread does not move a shared offset.
public final class FileByteSource: ByteSource {
    private let fd: Int32
    private let ownsFD: Bool
    public let size: UInt64

    /// Opens `path` read-only. O_NOFOLLOW: the image path itself must not be a symlink.
    public init(path: String) throws(DiskImageError) {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .openFailed(path: path, errno: Glibc.errno) }
        do {
            self.size = try Self.querySize(fd)
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
        self.ownsFD = true
    }

    /// Reads through a descriptor the caller keeps open (and closes) for this object's lifetime.
    public init(fd: Int32) throws(DiskImageError) {
        self.size = try Self.querySize(fd)
        self.fd = fd
        self.ownsFD = false
    }

    deinit {
        if ownsFD { close(fd) }
    }

    // lseek(SEEK_END) rather than fstat: it also gives the size of a block device.
    private static func querySize(_ fd: Int32) throws(DiskImageError) -> UInt64 {
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw .sizeQueryFailed(errno: Glibc.errno) }
        return UInt64(end)
    }

    public func read(at offset: UInt64, count: Int) throws(DiskImageError) -> [UInt8] {
        try checkRange(offset, count)
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buffer.withUnsafeMutableBytes { raw in
                pread(fd, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            }
            if n < 0 {
                let e = Glibc.errno
                if e == EINTR { continue }
                throw .readFailed(offset: offset, count: count, errno: e)
            }
            if n == 0 { throw .shortRead(offset: offset, wanted: count, got: done) }
            done += n
        }
        return buffer
    }
}
