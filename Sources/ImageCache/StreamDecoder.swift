import CCompression

/// Why a decoder stopped: what the library said. The caller adds the offsets.
struct DecodeFailure: Error {
    let reason: String
}

/// One compressed stream, decoded piece by piece by its library.
protocol StreamDecoder: AnyObject {
    /// Decodes from `input` into `output`. `atEnd`: no input follows this. `finished` once all of the
    /// compressed data (every concatenated stream, member or frame) is decoded and flushed.
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

/// zlib's inflate over gzip members; concatenated members decode one after the other, as gzip -d does.
final class GzipDecoder: StreamDecoder {
    private let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    /// A member just ended: the next input starts a new one (or there is none).
    private var betweenMembers = false

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

    func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                atEnd: Bool) throws(DecodeFailure) -> (consumed: Int, produced: Int, finished: Bool) {
        if betweenMembers {
            if input.isEmpty { return (0, 0, atEnd) }
            guard inflateReset(stream) == Z_OK else { throw DecodeFailure(reason: "inflateReset failed") }
            betweenMembers = false
        }
        // zlib counts in 32 bits: callers pass buffers of a few MiB.
        let inCount = min(input.count, Int(UInt32.max)), outCount = min(output.count, Int(UInt32.max))
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.pointee.avail_in = UInt32(inCount)
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.pointee.avail_out = UInt32(outCount)
        let rc = inflate(stream, Z_NO_FLUSH)
        let consumed = inCount - Int(stream.pointee.avail_in), produced = outCount - Int(stream.pointee.avail_out)
        switch rc {
        case Z_OK: return (consumed, produced, false)
        case Z_STREAM_END:
            betweenMembers = true
            return (consumed, produced, atEnd && consumed == input.count)
        case Z_BUF_ERROR where consumed == 0 && produced == 0:
            if atEnd { throw DecodeFailure(reason: "the file ends inside a gzip member (truncated)") }
            return (0, 0, false)
        case Z_BUF_ERROR: return (consumed, produced, false)
        default:
            let message = stream.pointee.msg.map { String(cString: $0) } ?? "zlib error \(rc)"
            throw DecodeFailure(reason: message)
        }
    }
}

/// libzstd's streaming decoder; concatenated frames decode one after the other (its default).
final class ZstdDecoder: StreamDecoder {
    private let context: OpaquePointer
    /// The last call ended a frame and flushed it.
    private var betweenFrames = false

    init() throws(DecodeFailure) {
        guard let context = ZSTD_createDCtx() else { throw DecodeFailure(reason: "ZSTD_createDCtx failed") }
        self.context = context
    }

    deinit { ZSTD_freeDCtx(context) }

    func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                atEnd: Bool) throws(DecodeFailure) -> (consumed: Int, produced: Int, finished: Bool) {
        if input.isEmpty && betweenFrames { return (0, 0, atEnd) }
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let rc = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
        if ZSTD_isError(rc) != 0 { throw DecodeFailure(reason: String(cString: ZSTD_getErrorName(rc))) }
        let consumed = inBuffer.pos, produced = outBuffer.pos
        // 0: a frame is complete and flushed.
        betweenFrames = rc == 0
        if betweenFrames { return (consumed, produced, atEnd && consumed == input.count) }
        if atEnd && consumed == 0 && produced == 0 {
            throw DecodeFailure(reason: "the file ends inside a zstd frame (truncated)")
        }
        return (consumed, produced, false)
    }
}
