import CCompression
import Glibc

/// What an xz file's index says, checked before any block is decoded: liblzma's file-info decoder reads
/// every stream's footer and index (refusing an index whose blocks claim more than the file holds), then
/// each block header that records sizes (xz -T writes them) must agree with its index record. Hostile
/// headers are refused here, before the cache is touched.
///
/// Data after the last stream (not xz's zero padding) hides the footer from liblzma: then the last
/// footer within `trailingSearch` bytes of the end whose CRC holds and whose index decodes marks where
/// the xz data ends, and the rest is trailing data.
struct XZIndex {
    var uncompressedSize: UInt64
    var blockCount: UInt64
    var streamCount: UInt64
    /// Where the xz data (with its padding) ends: the file's size unless data follows it.
    var dataEnd: UInt64

    /// The index may use at most this much memory (a hostile one claiming millions of blocks is refused).
    static let memoryLimit: UInt64 = 64 << 20
    /// How far before the end a footer is looked for when the file does not end with one.
    static let trailingSearch: UInt64 = 4 << 20

    static func read(fd: Int32, fileSize: UInt64, file: String) throws(CacheError) -> XZIndex {
        var dataEnd = fileSize
        let index: OpaquePointer
        do {
            index = try decodeIndex(fd: fd, fileSize: fileSize, file: file)
        } catch {
            guard let (end, found) = try indexBeforeTrailingData(fd: fd, fileSize: fileSize, file: file) else { throw error }
            (dataEnd, index) = (end, found)
        }
        defer { lzma_index_end(index, nil) }
        let result = XZIndex(uncompressedSize: lzma_index_uncompressed_size(index),
                             blockCount: lzma_index_block_count(index), streamCount: lzma_index_stream_count(index),
                             dataEnd: dataEnd)
        // off_t is signed: anything past it cannot be a file.
        guard result.uncompressedSize <= UInt64(Int64.max) else {
            throw .hostileHeader(file: file, reason: "the xz index claims \(result.uncompressedSize) bytes uncompressed")
        }
        try checkBlockHeaders(index, fd: fd, file: file)
        return result
    }

    /// The last stream footer before the end (at most `trailingSearch` back, at most 64 candidates) whose
    /// CRC32 holds and whose index decodes with the file taken to end there.
    private static func indexBeforeTrailingData(fd: Int32, fileSize: UInt64, file: String) throws(CacheError) -> (UInt64, OpaquePointer)? {
        let start = fileSize - min(fileSize, trailingSearch)
        var tail = [UInt8](repeating: 0, count: Int(fileSize - start))
        let count = tail.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(start)) }
        guard count == tail.count else { return nil }
        var candidates = 0
        // A footer: CRC32 (4), backward size (4), stream flags (0, check type), "YZ".
        var end = tail.count
        while end >= 12, candidates < 64 {
            defer { end -= 1 }
            guard tail[end - 2] == 0x59, tail[end - 1] == 0x5A,
                  tail[end - 4] == 0, tail[end - 3] & 0xF0 == 0 else { continue }
            let footer = end - 12
            let stored = UInt32(tail[footer]) | UInt32(tail[footer + 1]) << 8 | UInt32(tail[footer + 2]) << 16 | UInt32(tail[footer + 3]) << 24
            let crc = tail.withUnsafeBufferPointer { lzma_crc32($0.baseAddress! + footer + 4, 6, 0) }
            guard crc == stored else { continue }
            candidates += 1
            let dataEnd = start + UInt64(end)
            guard dataEnd < fileSize else { continue }
            if let index = try? decodeIndex(fd: fd, fileSize: dataEnd, file: file) { return (dataEnd, index) }
        }
        return nil
    }

    private static func decodeIndex(fd: Int32, fileSize: UInt64, file: String) throws(CacheError) -> OpaquePointer {
        var stream = lzma_stream()
        var index: OpaquePointer?
        guard lzma_file_info_decoder(&stream, &index, memoryLimit, fileSize) == LZMA_OK else {
            throw .hostileHeader(file: file, reason: "lzma_file_info_decoder failed")
        }
        defer { lzma_end(&stream) }
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var position: UInt64 = 0
        // Each round reads at most one buffer; liblzma seeks to footers, indexes and headers only.
        for _ in 0..<1_000_000 {
            // Never past fileSize: the bytes after it (trailing data) are not the stream's.
            let wanted = Int(min(UInt64(buffer.count), fileSize - min(position, fileSize)))
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, wanted, off_t(position)) }
            guard count >= 0 else { throw .system(operation: "pread", path: file, errno: errno) }
            let rc = buffer.withUnsafeBytes { bytes -> lzma_ret in
                stream.next_in = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
                stream.avail_in = count
                return lzma_code(&stream, count == 0 ? LZMA_FINISH : LZMA_RUN)
            }
            switch rc {
            case LZMA_OK: position += UInt64(count - stream.avail_in)
            case LZMA_SEEK_NEEDED: position = stream.seek_pos
            case LZMA_STREAM_END:
                guard let index else { throw .hostileHeader(file: file, reason: "no xz index") }
                return index
            default:
                throw .corrupt(file: file, format: "xz", offset: position, outputOffset: 0,
                               reason: "xz stream footer or index: \(XZDecoder.describe(rc))")
            }
        }
        throw .hostileHeader(file: file, reason: "the xz index did not end")
    }

    private static func checkBlockHeaders(_ index: OpaquePointer, fd: Int32, file: String) throws(CacheError) {
        var iterator = lzma_index_iter()
        lzma_index_iter_init(&iterator, index)
        var header = [UInt8](repeating: 0, count: 1024)
        var filters = [lzma_filter](repeating: lzma_filter(), count: Int(LZMA_FILTERS_MAX) + 1)
        while lzma_index_iter_next(&iterator, LZMA_INDEX_ITER_BLOCK) == 0 {
            let offset = iterator.block.compressed_file_offset, number = iterator.block.number_in_file
            let count = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard count > 0 else {
                throw .hostileHeader(file: file, reason: "xz block \(number): its header at \(offset) is beyond the file")
            }
            var block = lzma_block()
            block.version = 1
            block.check = iterator.stream.flags.pointee.check
            block.header_size = (UInt32(header[0]) + 1) * 4
            guard header[0] != 0, Int(block.header_size) <= count else {
                throw .corrupt(file: file, format: "xz", offset: offset, outputOffset: iterator.block.uncompressed_file_offset,
                               reason: "xz block \(number): bad header size")
            }
            let rc = filters.withUnsafeMutableBufferPointer { filterBuffer in
                block.filters = filterBuffer.baseAddress
                defer { lzma_filters_free(filterBuffer.baseAddress, nil) }
                return header.withUnsafeBufferPointer { lzma_block_header_decode(&block, nil, $0.baseAddress) }
            }
            guard rc == LZMA_OK else {
                throw .corrupt(file: file, format: "xz", offset: offset, outputOffset: iterator.block.uncompressed_file_offset,
                               reason: "xz block \(number) header: \(XZDecoder.describe(rc))")
            }
            let unknown = lzma_vli(UInt64.max)
            if block.uncompressed_size != unknown, block.uncompressed_size != iterator.block.uncompressed_size {
                throw .hostileHeader(file: file, reason: "xz block \(number) at \(offset): the index claims \(iterator.block.uncompressed_size) bytes uncompressed, its header \(block.uncompressed_size)")
            }
            if block.compressed_size != unknown, lzma_block_compressed_size(&block, iterator.block.unpadded_size) != LZMA_OK {
                throw .hostileHeader(file: file, reason: "xz block \(number) at \(offset): the index claims \(iterator.block.unpadded_size) bytes compressed, its header \(block.compressed_size)")
            }
        }
    }
}
