import CLinux
import Glibc

/// Copies a file's bytes into another at the same offsets, writing neither its holes nor its all-zero
/// blocks (as `cp --sparse=always` does): the output is a sparse file holding only what has content.
public struct SparseCopy {
    public static let chunk = 1 << 20
    static let block = 4096

    /// `progress(bytesDone)` after each chunk; returning false stops the copy (ECANCELED).
    public static func copy(from source: Int32, to output: Int32, size: UInt64,
                            progress: (UInt64) -> Bool) throws(SaveError) {
        guard ftruncate(output, off_t(size)) == 0 else { throw SaveError("truncate the output", errno: errno) }
        var buffer = [UInt8](repeating: 0, count: chunk)
        var offset: UInt64 = 0
        while offset < size {
            let data = lseek(source, off_t(offset), clinux_SEEK_DATA)
            if data < 0 {
                if errno == ENXIO { break }  // only a hole is left
                throw SaveError("SEEK_DATA in the source", errno: errno)
            }
            var end = UInt64(lseek(source, data, clinux_SEEK_HOLE))
            if Int64(end) < 0 { end = size }
            offset = UInt64(data)
            while offset < min(end, size) {
                let length = Int(min(UInt64(chunk), min(end, size) - offset))
                let count = buffer.withUnsafeMutableBytes { pread(source, $0.baseAddress, length, off_t(offset)) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { throw SaveError("read the source at \(offset)", errno: count < 0 ? errno : EIO) }
                try writeNonZero(buffer, count: count, to: output, at: offset)
                offset += UInt64(count)
                guard progress(offset) else { throw SaveError("save", errno: ECANCELED) }
            }
        }
        _ = progress(size)
    }

    /// Writes the runs of blocks of `buffer[..<count]` that are not all zero.
    static func writeNonZero(_ buffer: [UInt8], count: Int, to output: Int32, at offset: UInt64) throws(SaveError) {
        let failure: SaveError? = buffer.withUnsafeBytes { raw in
            var start = 0
            while start < count {
                while start < count, isZero(raw, start, min(block, count - start)) { start += block }
                guard start < count else { break }
                var end = start
                while end < count, !isZero(raw, end, min(block, count - end)) { end += block }
                end = min(end, count)
                var written = start
                while written < end {
                    let n = pwrite(output, raw.baseAddress! + written, end - written, off_t(offset) + off_t(written))
                    if n < 0, errno == EINTR { continue }
                    guard n > 0 else { return SaveError("write the output at \(offset + UInt64(written))", errno: n < 0 ? errno : ENOSPC) }
                    written += n
                }
                start = end
            }
            return nil
        }
        if let failure { throw failure }
    }

    static func isZero(_ raw: UnsafeRawBufferPointer, _ start: Int, _ length: Int) -> Bool {
        let words = raw.baseAddress!.advanced(by: start)
        // The first byte equal to zero and the rest equal to their predecessors: all zero.
        return words.load(as: UInt8.self) == 0 && memcmp(words, words + 1, length - 1) == 0
    }
}
