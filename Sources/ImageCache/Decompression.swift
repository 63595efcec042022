import Glibc

extension ImageCache {
    static let inputChunk = 1 << 20
    /// A multiple of the page size: every flush but the last covers whole pages. Small enough to stay in
    /// the CPU's cache between the decoder's copy into it, the zero check and pwrite's copy out of it. With
    /// 8 MiB, perf showed pwrite's copy (copy_folio_from_iter_atomic) at 16 % of the daemon's samples and
    /// the feeding thread 9-14 s of a 25-35 s decompression in flush; with 256 KiB 5-8 s. The total did
    /// not move measurably on the shared 2-core machine (CPU-bound; Tools/compressed-bench --before).
    static let outputChunk = 256 << 10

    /// Decompresses the job's file into BASE.PID.partial, then commits it as the entry. On any failure
    /// the partial file is removed: nothing is cached from a file that did not decode to its end.
    func decompress(_ job: Job, sourceFD: Int32) throws(CacheError) -> CachedImage {
        defer { close(sourceFD) }
        let entry = job.entry
        var expected: UInt64 = 0
        var detail = ""
        if job.format == .xz {
            let index = try XZIndex.read(fd: sourceFD, fileSize: job.compressedSize, file: job.file)
            expected = index.uncompressedSize
            detail = ", \(index.blockCount) block\(index.blockCount == 1 ? "" : "s"), \(Self.mib(expected)) MiB uncompressed"
        }
        logger.info("image \(job.image): decompressing \(job.file) (\(job.format.rawValue), \(Self.mib(job.compressedSize)) MiB\(detail)) into \(entry.dataPath)")
        job.report(compressed: 0, decompressed: 0, total: expected)
        // An old entry of this image (the file was replaced) goes now, unless sandboxes still use it.
        _ = entry.removeIfUnused()
        unlink(entry.partialPath)
        let fd = open(entry.partialPath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw .system(operation: "create", path: entry.partialPath, errno: errno) }
        var keep = false
        defer {
            if !keep {
                close(fd)
                unlink(entry.partialPath)
            }
        }
        _ = posix_fadvise(sourceFD, 0, 0, POSIX_FADV_SEQUENTIAL)
        var writer = SparseWriter(fd: fd, path: entry.partialPath)
        if expected > 0, ftruncate(fd, off_t(expected)) != 0 {
            throw .hostileHeader(file: job.file, reason: "cannot make a \(expected)-byte cache file: \(String(cString: strerror(errno)))")
        }
        let writing = try decode(job, from: sourceFD, into: &writer)
        let decoded = ContinuousClock.now
        if job.format == .xz, writer.offset != expected {
            throw .corrupt(file: job.file, format: .xz, offset: job.compressedSize, outputOffset: writer.offset,
                           reason: "decoded \(writer.offset) bytes, the index claims \(expected)")
        }
        var after = stat()
        guard fstat(sourceFD, &after) == 0, CacheRecord.Identity(after) == job.identity else { throw .sourceChanged(file: job.file) }
        try writer.finish()
        let synced = ContinuousClock.now
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .system(operation: "fstat", path: entry.partialPath, errno: errno) }
        // Held in use from before it has its name: no evictor can take it between rename and return.
        guard flock(fd, LOCK_SH) == 0 else { throw .system(operation: "flock", path: entry.partialPath, errno: errno) }
        let record = CacheRecord(source: job.file, format: job.format, identity: job.identity,
                                 cacheInode: UInt64(info.st_ino), cacheSize: writer.offset)
        try entry.commit(partialFD: fd, record: record)
        keep = true
        let seconds = Self.seconds(job.started.duration(to: .now))
        logger.info("image \(job.image): ready in \(Self.format(seconds)) s: \(Self.mib(writer.offset)) MiB at \(Self.format(Double(writer.offset) / 1_048_576 / max(seconds, 0.001))) MiB/s, \(Self.mib(UInt64(info.st_blocks) * 512)) MiB on disk (decoded in \(Self.format(Self.seconds(job.started.duration(to: decoded)))) s, \(Self.format(Self.seconds(writing))) s of it writing; fsync \(Self.format(Self.seconds(decoded.duration(to: synced)))) s)")
        return CachedImage(path: entry.dataPath, recordPath: entry.recordPath, fd: fd, size: writer.offset, reused: false)
    }

    /// Returns the time spent handing the output to the writer (zero detection and pwrite).
    private func decode(_ job: Job, from sourceFD: Int32, into writer: inout SparseWriter) throws(CacheError) -> Duration {
        let decoder: any StreamDecoder
        do {
            switch job.format {
            case .xz: decoder = try XZDecoder(threads: threads, memoryLimit: memoryLimit)
            case .gzip: decoder = try GzipDecoder()
            case .zstd: decoder = try ZstdDecoder()
            }
        } catch {
            throw .corrupt(file: job.file, format: job.format, offset: 0, outputOffset: 0, reason: error.reason)
        }
        let input = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.inputChunk, alignment: 4096)
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.outputChunk, alignment: 4096)
        defer {
            input.deallocate()
            output.deallocate()
        }
        var inputStart = 0, inputEnd = 0, filled = 0
        var consumedTotal: UInt64 = 0, readTotal: UInt64 = 0
        var atEnd = false
        var gated = testGate == nil
        var writing = Duration.zero
        func flush() throws(CacheError) {
            let start = ContinuousClock.now
            defer { writing += start.duration(to: .now) }
            try writer.append(UnsafeRawBufferPointer(rebasing: output[0..<filled]),
                              reserve: { (bytes) throws(CacheError) in try reserve(bytes, for: job) },
                              makeRoom: { makeRoom(for: job) })
            filled = 0
            job.report(compressed: consumedTotal, decompressed: writer.offset)
            if !gated, let testGate {
                gated = true
                Self.pass(gate: testGate)
            }
        }
        while true {
            if cancelled.load(ordering: .relaxed) { throw .cancelled(file: job.file) }
            if inputStart == inputEnd && !atEnd {
                let count = read(sourceFD, input.baseAddress, input.count)
                if count < 0 {
                    if errno == EINTR { continue }
                    throw .system(operation: "read", path: job.file, errno: errno)
                }
                inputStart = 0
                inputEnd = count
                readTotal += UInt64(count)
                atEnd = count == 0
            }
            let step: (consumed: Int, produced: Int, finished: Bool)
            do {
                step = try decoder.decode(UnsafeRawBufferPointer(rebasing: input[inputStart..<inputEnd]),
                                          into: UnsafeMutableRawBufferPointer(rebasing: output[filled...]), atEnd: atEnd)
            } catch {
                throw .corrupt(file: job.file, format: job.format, offset: consumedTotal, outputOffset: writer.offset + UInt64(filled),
                               reason: error.reason)
            }
            inputStart += step.consumed
            consumedTotal += UInt64(step.consumed)
            filled += step.produced
            if step.finished {
                if inputStart < inputEnd || read(sourceFD, input.baseAddress, 1) != 0 {
                    throw .corrupt(file: job.file, format: job.format, offset: consumedTotal, outputOffset: writer.offset + UInt64(filled),
                                   reason: "data after the end of the compressed stream")
                }
                try flush()
                return writing
            }
            if filled == output.count { try flush() }
            if atEnd && step.consumed == 0 && step.produced == 0 && inputStart == inputEnd && filled < output.count {
                throw .corrupt(file: job.file, format: job.format, offset: consumedTotal, outputOffset: writer.offset + UInt64(filled),
                               reason: "the file ends inside the compressed stream (truncated)")
            }
        }
    }

    /// Blocks until a writer has opened the FIFO and closed it again.
    static func pass(gate: String) {
        let fd = open(gate, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        var byte: UInt8 = 0
        while read(fd, &byte, 1) > 0 {}
        close(fd)
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
