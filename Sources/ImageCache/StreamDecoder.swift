import CCompression

/// Why a decoder stopped: what the library said. The caller adds the offsets.
struct DecodeFailure: Error {
    let reason: String
}

/// One compressed stream, decoded piece by piece by its library.
protocol StreamDecoder: AnyObject {
    /// Decodes from `input` into `output`. `atEnd`: no input follows this. `finished` once all of the
    /// compressed data (every concatenated stream, member or frame) is decoded and flushed; input left
    /// then is data after the compressed stream (the caller ignores it, as gzip -d does). Nothing consumed
    /// or produced and not finished: call again with more input behind the unconsumed bytes.
    func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                atEnd: Bool) throws(DecodeFailure) -> (consumed: Int, produced: Int, finished: Bool)
}

/// liblzma's multi-threaded decoder: blocks decode in parallel when the file has several (xz -T writes
/// block sizes into their headers for this); a single-block file decodes on one thread.
final class XZDecoder: StreamDecoder {
    // On the heap: the library's state must not see the struct move.
    private let stream = UnsafeMutablePointer<lzma_stream>.allocate(capacity: 1)

    init(threads: UInt32, memoryLimit: UInt64) throws(DecodeFailure) {
        stream.initialize(to: lzma_stream())
        var options = lzma_mt()
        options.flags = ccompression_xz_flags
        options.threads = threads
        options.timeout = 0
        options.memlimit_threading = memoryLimit
        // A header asking for more (a huge dictionary) is refused rather than allocated.
        options.memlimit_stop = memoryLimit
        let rc = lzma_stream_decoder_mt(stream, &options)
        guard rc == LZMA_OK else {
            stream.deallocate()
            throw DecodeFailure(reason: "lzma_stream_decoder_mt: \(Self.describe(rc))")
        }
    }

    deinit {
        lzma_end(stream)
        stream.deallocate()
    }

    func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                atEnd: Bool) throws(DecodeFailure) -> (consumed: Int, produced: Int, finished: Bool) {
        stream.pointee.next_in = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.pointee.avail_in = input.count
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.pointee.avail_out = output.count
        let rc = lzma_code(stream, atEnd ? LZMA_FINISH : LZMA_RUN)
        let consumed = input.count - stream.pointee.avail_in, produced = output.count - stream.pointee.avail_out
        switch rc {
        case LZMA_OK: return (consumed, produced, false)
        case LZMA_STREAM_END: return (consumed, produced, true)
        // No progress possible: with LZMA_FINISH that means the input ended early.
        case LZMA_BUF_ERROR where consumed == 0 && produced == 0:
            throw DecodeFailure(reason: atEnd ? "the file ends inside the stream (truncated)" : "no progress")
        case LZMA_BUF_ERROR: return (consumed, produced, false)
        default: throw DecodeFailure(reason: Self.describe(rc))
        }
    }

    static func describe(_ rc: lzma_ret) -> String {
        switch rc {
        case LZMA_FORMAT_ERROR: "not in the xz format"
        case LZMA_DATA_ERROR: "the data is corrupt (check or size mismatch)"
        case LZMA_OPTIONS_ERROR: "unsupported options in a header"
        case LZMA_MEMLIMIT_ERROR: "decoding would need more memory than the limit"
        case LZMA_MEM_ERROR: "out of memory"
        case LZMA_UNSUPPORTED_CHECK: "unsupported integrity check"
        case LZMA_BUF_ERROR: "the file ends inside the stream (truncated)"
        default: "liblzma error \(rc.rawValue)"
        }
    }
}

/// A format whose files may hold several streams back to back (gzip members, zstd frames, bzip2 streams),
/// one library call at a time; ConcatenatedDecoder goes from one stream to the next.
protocol ConcatenatedFormat: AnyObject {
    /// What one stream is called in messages ("gzip member").
    static var streamName: String { get }
    /// How many bytes `startsStream` looks at.
    static var magicLength: Int { get }
    /// The input starts another stream (its magic) rather than data after the last one.
    static func startsStream(_ input: UnsafeRawBufferPointer) -> Bool
    /// Readies the library for the next stream.
    func restart() throws(DecodeFailure)
    /// One library call; `ended` once the stream is decoded and flushed.
    func step(_ input: UnsafeRawBufferPointer,
              into output: UnsafeMutableRawBufferPointer) throws(DecodeFailure) -> (consumed: Int, produced: Int, ended: Bool)
}

/// The decode loop of the concatenated formats: after a stream ends, input that starts another is decoded
/// too, as gzip -d, zstd -d and bzip2 -d do; anything else is data after the compressed stream (OpenWrt's
/// fwtool metadata) and is left.
final class ConcatenatedDecoder<Format: ConcatenatedFormat>: StreamDecoder {
    private let format: Format
    /// A stream just ended: the next input starts a new one (or there is none).
    private var betweenStreams = false

    init(_ format: Format) {
        self.format = format
    }

    func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                atEnd: Bool) throws(DecodeFailure) -> (consumed: Int, produced: Int, finished: Bool) {
        if betweenStreams {
            if input.isEmpty { return (0, 0, atEnd) }
            if input.count < Format.magicLength && !atEnd { return (0, 0, false) }
            guard input.count >= Format.magicLength, Format.startsStream(input) else { return (0, 0, true) }
            try format.restart()
            betweenStreams = false
        }
        let (consumed, produced, ended) = try format.step(input, into: output)
        if ended {
            betweenStreams = true
            return (consumed, produced, atEnd && consumed == input.count)
        }
        if atEnd && consumed == 0 && produced == 0 {
            throw DecodeFailure(reason: "the file ends inside a \(Format.streamName) (truncated)")
        }
        return (consumed, produced, false)
    }
}

/// zlib's inflate over one gzip member.
final class GzipFormat: ConcatenatedFormat {
    static let streamName = "gzip member"
    static let magicLength = 2
    private let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)

    init() throws(DecodeFailure) {
        stream.initialize(to: z_stream())
        let rc = ccompression_inflate_init_gzip(stream)
        guard rc == Z_OK else {
            stream.deallocate()
            throw DecodeFailure(reason: "inflateInit2: zlib error \(rc)")
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
    }

    static func startsStream(_ input: UnsafeRawBufferPointer) -> Bool { input.starts(with: [0x1f, 0x8b]) }

    func restart() throws(DecodeFailure) {
        guard inflateReset(stream) == Z_OK else { throw DecodeFailure(reason: "inflateReset failed") }
    }

    func step(_ input: UnsafeRawBufferPointer,
              into output: UnsafeMutableRawBufferPointer) throws(DecodeFailure) -> (consumed: Int, produced: Int, ended: Bool) {
        // zlib counts in 32 bits: callers pass buffers of a few MiB.
        let inCount = min(input.count, Int(UInt32.max)), outCount = min(output.count, Int(UInt32.max))
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.pointee.avail_in = UInt32(inCount)
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.pointee.avail_out = UInt32(outCount)
        let rc = inflate(stream, Z_NO_FLUSH)
        let consumed = inCount - Int(stream.pointee.avail_in), produced = outCount - Int(stream.pointee.avail_out)
        switch rc {
        // Z_BUF_ERROR: no progress possible without more input or output room.
        case Z_OK, Z_BUF_ERROR: return (consumed, produced, false)
        case Z_STREAM_END: return (consumed, produced, true)
        default: throw DecodeFailure(reason: stream.pointee.msg.map { String(cString: $0) } ?? "zlib error \(rc)")
        }
    }
}

/// libzstd's streaming decoder over one frame (or a skippable frame).
final class ZstdFormat: ConcatenatedFormat {
    static let streamName = "zstd frame"
    static let magicLength = 4
    private let context: OpaquePointer

    init() throws(DecodeFailure) {
        guard let context = ZSTD_createDCtx() else { throw DecodeFailure(reason: "ZSTD_createDCtx failed") }
        self.context = context
    }

    deinit { ZSTD_freeDCtx(context) }

    /// A zstd frame's magic (0xFD2FB528) or a skippable frame's (0x184D2A50-5F), little-endian.
    static func startsStream(_ input: UnsafeRawBufferPointer) -> Bool {
        let magic = UInt32(input[0]) | UInt32(input[1]) << 8 | UInt32(input[2]) << 16 | UInt32(input[3]) << 24
        return magic == 0xFD2F_B528 || magic & 0xFFFF_FFF0 == 0x184D_2A50
    }

    /// The context starts the next frame by itself.
    func restart() {}

    func step(_ input: UnsafeRawBufferPointer,
              into output: UnsafeMutableRawBufferPointer) throws(DecodeFailure) -> (consumed: Int, produced: Int, ended: Bool) {
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let rc = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
        if ZSTD_isError(rc) != 0 { throw DecodeFailure(reason: String(cString: ZSTD_getErrorName(rc))) }
        // 0: a frame is complete and flushed.
        return (inBuffer.pos, outBuffer.pos, rc == 0)
    }
}

/// libbz2's decoder over one bzip2 stream (pbzip2 writes several).
final class Bzip2Format: ConcatenatedFormat {
    static let streamName = "bzip2 stream"
    static let magicLength = 4
    private let stream = UnsafeMutablePointer<bz_stream>.allocate(capacity: 1)

    init() throws(DecodeFailure) {
        stream.initialize(to: bz_stream())
        let rc = BZ2_bzDecompressInit(stream, 0, 0)
        guard rc == BZ_OK else {
            stream.deallocate()
            throw DecodeFailure(reason: "BZ2_bzDecompressInit: \(Self.describe(rc))")
        }
    }

    deinit {
        BZ2_bzDecompressEnd(stream)
        stream.deallocate()
    }

    /// "BZh" and the block size digit.
    static func startsStream(_ input: UnsafeRawBufferPointer) -> Bool {
        input.starts(with: Array("BZh".utf8)) && (0x31...0x39).contains(input[3])
    }

    /// libbz2 has no reset: the next stream gets a fresh decoder.
    func restart() throws(DecodeFailure) {
        BZ2_bzDecompressEnd(stream)
        stream.pointee = bz_stream()
        let rc = BZ2_bzDecompressInit(stream, 0, 0)
        guard rc == BZ_OK else { throw DecodeFailure(reason: "BZ2_bzDecompressInit: \(Self.describe(rc))") }
    }

    func step(_ input: UnsafeRawBufferPointer,
              into output: UnsafeMutableRawBufferPointer) throws(DecodeFailure) -> (consumed: Int, produced: Int, ended: Bool) {
        // libbz2 counts in 32 bits: callers pass buffers of a few MiB.
        let inCount = min(input.count, Int(UInt32.max)), outCount = min(output.count, Int(UInt32.max))
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: CChar.self))
        stream.pointee.avail_in = UInt32(inCount)
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: CChar.self)
        stream.pointee.avail_out = UInt32(outCount)
        let rc = BZ2_bzDecompress(stream)
        let consumed = inCount - Int(stream.pointee.avail_in), produced = outCount - Int(stream.pointee.avail_out)
        switch rc {
        case BZ_OK: return (consumed, produced, false)
        case BZ_STREAM_END: return (consumed, produced, true)
        default: throw DecodeFailure(reason: Self.describe(rc))
        }
    }

    static func describe(_ rc: Int32) -> String {
        switch rc {
        case BZ_DATA_ERROR: "the data is corrupt (CRC or structure)"
        case BZ_DATA_ERROR_MAGIC: "not in the bzip2 format"
        case BZ_MEM_ERROR: "out of memory"
        case BZ_PARAM_ERROR: "bad parameters"
        default: "libbz2 error \(rc)"
        }
    }
}
