import Glibc

extension ImageCache {
    static let inputChunk = 1 << 20
    /// A multiple of the page size: every flush but the last covers whole pages. Small enough to stay in
    /// the CPU's cache between the decoder's copy into it, the zero check and pwrite's copy out of it. With
    /// 8 MiB, perf showed pwrite's copy (copy_folio_from_iter_atomic) at 16 % of the daemon's samples and
    /// the feeding thread 9-14 s of a 25-35 s decompression in flush; with 256 KiB 5-8 s. The total did
    /// not move measurably on the shared 2-core machine (CPU-bound; Tools/bench/run compressed --before).
    static let outputChunk = 256 << 10

    /// Decodes `compression` from `sourceFD` into `writer`. Returns the time spent handing the output to
    /// the writer (zero detection and pwrite). Data after the end of the compressed data is ignored with
    /// one log line (as gzip -d does); a stream that is corrupt or cut before its end is an error.
    /// `size`: the compressed file's (the job's file, or a stage holding what an archive held).
    func decompress(_ job: Job, _ compression: Compression, from sourceFD: Int32, size: UInt64,
                    into writer: inout SparseWriter) throws(CacheError) -> Duration {
        var expected: UInt64 = 0
        var dataEnd = size
        var detail = ""
        if compression == .xz {
            let index = try XZIndex.read(fd: sourceFD, fileSize: size, file: job.file)
            expected = index.uncompressedSize
            dataEnd = index.dataEnd
            detail = ", \(index.blockCount) block\(index.blockCount == 1 ? "" : "s"), \(Self.mib(expected)) MiB uncompressed"
        }
        logger.info("image \(job.image): decompressing \(job.file) (\(compression.rawValue), \(Self.mib(size)) MiB\(detail)) into \(writer.path)")
        job.report(compressed: 0, decompressed: 0, total: expected)
        if expected > 0, ftruncate(writer.fd, off_t(expected)) != 0 {
            throw .hostileHeader(file: job.file, reason: "cannot make a \(expected)-byte cache file: \(String(cString: strerror(errno)))")
        }
        let decoder: any StreamDecoder
        do {
            switch compression {
            case .xz: decoder = try XZDecoder(threads: threads, memoryLimit: memoryLimit)
            case .gzip: decoder = ConcatenatedDecoder(try GzipFormat())
            case .zstd: decoder = ConcatenatedDecoder(try ZstdFormat())
            case .bzip2: decoder = ConcatenatedDecoder(try Bzip2Format())
            }
        } catch {
            throw .corrupt(file: job.file, format: compression.rawValue, offset: 0, outputOffset: 0, reason: error.reason)
        }
        let writing = try decode(job, compression, decoder, from: sourceFD, size: size, upTo: dataEnd, into: &writer)
        if compression == .xz, writer.offset != expected {
            throw .corrupt(file: job.file, format: "xz", offset: dataEnd, outputOffset: writer.offset,
                           reason: "decoded \(writer.offset) bytes, the index claims \(expected)")
        }
        return writing
    }

    private func decode(_ job: Job, _ compression: Compression, _ decoder: any StreamDecoder, from sourceFD: Int32,
                        size: UInt64, upTo dataEnd: UInt64, into writer: inout SparseWriter) throws(CacheError) -> Duration {
        let input = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.inputChunk, alignment: 4096)
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.outputChunk, alignment: 4096)
        defer {
            input.deallocate()
            output.deallocate()
        }
        var inputStart = 0, inputEnd = 0, filled = 0
        var consumedTotal: UInt64 = 0, readTotal: UInt64 = 0
        var atEnd = false, wantsMore = false
        var writing = Duration.zero
        func corrupt(_ reason: String) -> CacheError {
            .corrupt(file: job.file, format: compression.rawValue, offset: consumedTotal, outputOffset: writer.offset + UInt64(filled), reason: reason)
        }
        func flush() throws(CacheError) {
            let start = ContinuousClock.now
            defer { writing += start.duration(to: .now) }
            try append(UnsafeRawBufferPointer(rebasing: output[0..<filled]), to: &writer, for: job)
            filled = 0
            job.report(compressed: consumedTotal, decompressed: writer.offset)
            firstOutput(job)
        }
        while true {
            if cancelled.load(ordering: .relaxed) { throw .cancelled(file: job.file) }
            if (inputStart == inputEnd || wantsMore) && !atEnd {
                // Unconsumed bytes (a magic number cut by the last read) move to the front; more follow them.
                let kept = inputEnd - inputStart
                if kept > 0 && inputStart > 0 { memmove(input.baseAddress!, input.baseAddress! + inputStart, kept) }
                guard kept < input.count else { throw corrupt("no progress") }
                let wanted = Int(min(UInt64(input.count - kept), dataEnd - readTotal))
                let count = wanted == 0 ? 0 : read(sourceFD, input.baseAddress! + kept, wanted)
                if count < 0 {
                    if errno == EINTR { continue }
                    throw .system(operation: "read", path: job.file, errno: errno)
                }
                inputStart = 0
                inputEnd = kept + count
                readTotal += UInt64(count)
                atEnd = count == 0
                wantsMore = false
            }
            let step: (consumed: Int, produced: Int, finished: Bool)
            do {
                step = try decoder.decode(UnsafeRawBufferPointer(rebasing: input[inputStart..<inputEnd]),
                                          into: UnsafeMutableRawBufferPointer(rebasing: output[filled...]), atEnd: atEnd)
            } catch {
                throw corrupt(error.reason)
            }
            inputStart += step.consumed
            consumedTotal += UInt64(step.consumed)
            filled += step.produced
            if step.finished {
                try flush()
                let ignored = size - min(consumedTotal, size)
                if ignored > 0 {
                    logger.notice("image \(job.image): ignoring \(ignored) bytes after the end of the \(compression.rawValue) data at offset \(consumedTotal) of \(job.file) (as gzip -d does with trailing data)")
                }
                return writing
            }
            if filled == output.count { try flush() }
            if step.consumed == 0 && step.produced == 0 && filled < output.count {
                if atEnd { throw corrupt("the file ends inside the compressed stream (truncated)") }
                wantsMore = true
            }
        }
    }

    /// Hands whole output buffers to the writer, within the cache's limit.
    func append(_ bytes: UnsafeRawBufferPointer, to writer: inout SparseWriter, for job: Job) throws(CacheError) {
        try writer.append(bytes, reserve: { (bytes) throws(CacheError) in try reserve(bytes, for: job) },
                          makeRoom: { makeRoom(for: job) })
    }

    /// Tests: the first-output hook, once per job (after its progress is reported).
    func firstOutput(_ job: Job) {
        guard let hook = hooks.firstOutput,
              !job.reachedFirstOutput.withLock({ reached in defer { reached = true }; return reached }) else { return }
        hook(job.image)
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func mib(_ bytes: UInt64) -> String { format(Double(bytes) / 1_048_576) }

    static func format(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
