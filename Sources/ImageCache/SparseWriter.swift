import Glibc

/// Writes decompressed bytes to the cache file, leaving every all-zero 4 KiB page as a hole (images'
/// free space is zeroed, so it costs no disk). Callers append whole pages except at the very end, so
/// pages line up with the file's blocks.
struct SparseWriter {
    static let pageSize = 4096
    private static let zeroPage = [UInt8](repeating: 0, count: pageSize)

    let fd: Int32
    let path: String
    /// Bytes appended so far: the file's size once finished.
    private(set) var offset: UInt64 = 0
    /// Bytes actually written (not holes).
    private(set) var written: UInt64 = 0

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Appends `bytes`. `reserve` is told how many bytes will reach the disk before they do (it may throw
    /// to stop: the cache's limit); `makeRoom` is asked to free space when the disk is full (false: none).
    mutating func append(_ bytes: UnsafeRawBufferPointer, reserve: (UInt64) throws(CacheError) -> Void,
                         makeRoom: () -> Bool) throws(CacheError) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        let runs = Self.dataRuns(bytes)
        try reserve(runs.reduce(0) { $0 + UInt64($1.count) })
        for run in runs {
            var done = 0
            while done < run.count {
                let count = pwrite(fd, base + run.lowerBound + done, run.count - done, off_t(offset) + off_t(run.lowerBound + done))
                if count > 0 {
                    done += count
                    continue
                }
                let error = count < 0 ? errno : ENOSPC
                if error == EINTR { continue }
                if error == ENOSPC || error == EDQUOT, makeRoom() { continue }
                if error == ENOSPC || error == EDQUOT {
                    throw .noRoom(file: path, reason: "the disk is full (writing at offset \(offset + UInt64(run.lowerBound + done)))")
                }
                throw .system(operation: "pwrite", path: path, errno: error)
            }
            written += UInt64(run.count)
        }
        offset += UInt64(bytes.count)
    }

    /// Byte ranges of `bytes` to write: runs of pages that are not all zero.
    static func dataRuns(_ bytes: UnsafeRawBufferPointer) -> [Range<Int>] {
        var runs: [Range<Int>] = []
        var start: Int?
        var position = 0
        zeroPage.withUnsafeBytes { zero in
            while position < bytes.count {
                let length = min(pageSize, bytes.count - position)
                let isZero = memcmp(bytes.baseAddress! + position, zero.baseAddress!, length) == 0
                if isZero, let first = start {
                    runs.append(first..<position)
                    start = nil
                } else if !isZero, start == nil {
                    start = position
                }
                position += length
            }
        }
        if let first = start { runs.append(first..<bytes.count) }
        return runs
    }

    /// Another writer (qemu-img) filled the file up to `size`.
    mutating func adoptWritten(size: UInt64) { offset = size }

    /// Sets the final size (trailing holes included) and makes the data durable.
    func finish() throws(CacheError) {
        guard ftruncate(fd, off_t(offset)) == 0 else { throw .system(operation: "ftruncate", path: path, errno: errno) }
        guard fsync(fd) == 0 else {
            let error = errno
            if error == ENOSPC || error == EDQUOT { throw .noRoom(file: path, reason: "the disk is full (fsync)") }
            throw .system(operation: "fsync", path: path, errno: error)
        }
    }
}
