import Glibc
import LinuxBlock

extension ImageCache {
    /// Makes the job's file raw into BASE.PID.partial (decompressed, extracted from its archive or
    /// converted by qemu-img) from `sourceFD` (the caller's, open until this returns), then commits it as the entry. On any failure the partial file (and a
    /// staged VM disk) is removed: nothing is cached from a file that was not read to its end.
    func build(_ job: Job, sourceFD: Int32) throws(CacheError) -> CachedImage {
        let entry = job.entry
        // An old entry of this image (the file was replaced) goes now, unless sandboxes still use it.
        _ = entry.removeIfUnused()
        unlink(entry.partialPath)
        let partial = try CacheError.open(entry.partialPath, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o600,
                                          operation: "create")
        let fd = partial.raw
        var keep = false
        defer { if !keep { unlink(entry.partialPath) } }
        _ = posix_fadvise(sourceFD, 0, 0, POSIX_FADV_SEQUENTIAL)
        var writer = SparseWriter(fd: fd, path: entry.partialPath)
        var writing = Duration.zero
        switch job.format {
        case .raw:
            throw .refused(file: job.file, reason: "a plain image needs no cache")
        case .compressed(let compression):
            writing = try decompress(job, compression, from: sourceFD, size: job.compressedSize, into: &writer)
        case .archive(let format, let compression):
            let archive = ArchiveImage(fd: sourceFD, format: format, filter: compression, file: job.file)
            let chosen = try archive.choose(limit: try sizeLimit(), logger: logger, image: job.image)
            logger.info("image \(job.image): extracting \(chosen.printed) (\(Self.mib(chosen.size)) MiB) from \(job.file) (\(job.label), \(Self.mib(job.compressedSize)) MiB)")
            func fill(_ stage: inout SparseWriter) throws(CacheError) { _ = try extract(job, archive, chosen, into: &stage) }
            switch chosen.kind {
            case .vm(let vm):
                try staged(job, fill) { (stageFD, _) throws(CacheError) in try convert(job, vm, diskFD: stageFD, into: &writer) }
            case .compressed(let compression):
                // Vendors zip an .img.xz: the compressed image is staged, then decompressed from there.
                writing = try staged(job, fill) { (stageFD, size) throws(CacheError) in
                    try decompress(job, compression, from: stageFD, size: size, into: &writer)
                }
            case .raw:
                writing = try extract(job, archive, chosen, into: &writer)
            }
        case .vm(let format, nil):
            try convert(job, format, diskFD: sourceFD, into: &writer)
        case .vm(let format, let compression?):
            try staged(job, { (stage) throws(CacheError) in _ = try decompress(job, compression, from: sourceFD, size: job.compressedSize, into: &stage) }) {
                (stageFD, _) throws(CacheError) in try convert(job, format, diskFD: stageFD, into: &writer)
            }
        }
        // A helper (qemu-img) may have finished its work before the cancel reached it (killing a zombie
        // does nothing): a cancelled job is never committed, however far it got.
        if cancelled.load(ordering: .sequentiallyConsistent) { throw .cancelled(file: job.file) }
        let made = ContinuousClock.now
        var after = stat()
        guard fstat(sourceFD, &after) == 0, CacheRecord.Identity(after) == job.identity else { throw .sourceChanged(file: job.file) }
        try writer.finish()
        let synced = ContinuousClock.now
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .system(operation: "fstat", path: entry.partialPath, errno: errno) }
        // Held in use from before it has its name: no evictor can take it between rename and return.
        guard flock(fd, LOCK_SH) == 0 else { throw .system(operation: "flock", path: entry.partialPath, errno: errno) }
        let record = CacheRecord(source: job.file, format: job.label, identity: job.identity,
                                 cacheInode: UInt64(info.st_ino), cacheSize: writer.offset)
        try entry.commit(record: record)
        keep = true
        let seconds = Self.seconds(job.started.duration(to: .now))
        logger.info("image \(job.image): ready in \(Self.format(seconds)) s: \(Self.mib(writer.offset)) MiB at \(Self.format(Double(writer.offset) / 1_048_576 / max(seconds, 0.001))) MiB/s, \(Self.mib(UInt64(info.st_blocks) * 512)) MiB on disk (made in \(Self.format(Self.seconds(job.started.duration(to: made)))) s, \(Self.format(Self.seconds(writing))) s of it writing; fsync \(Self.format(Self.seconds(made.duration(to: synced)))) s)")
        return CachedImage(path: entry.dataPath, recordPath: entry.recordPath, fd: partial, size: writer.offset, reused: false)
    }

    /// A VM disk that is compressed or in an archive, or a compressed image in an archive: `fill` writes it
    /// to BASE.stage.PID.partial (qemu-img and the xz index need a file they can seek in), `use` reads it
    /// from there (its fd from offset 0, and its size), then it is removed.
    private func staged<Result>(_ job: Job, _ fill: (inout SparseWriter) throws(CacheError) -> Void,
                                use: (Int32, UInt64) throws(CacheError) -> Result) throws(CacheError) -> Result {
        let path = job.entry.stagePath
        unlink(path)
        let stage = try CacheError.open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o600, operation: "create")
        defer { unlink(path) }
        let stageFD = stage.raw
        var writer = SparseWriter(fd: stageFD, path: path)
        try fill(&writer)
        guard ftruncate(stageFD, off_t(writer.offset)) == 0 else { throw .system(operation: "ftruncate", path: path, errno: errno) }
        guard lseek(stageFD, 0, SEEK_SET) == 0 else { throw .system(operation: "lseek", path: path, errno: errno) }
        return try use(stageFD, writer.offset)
    }

    /// Streams the archive's image into `writer`; returns the time spent writing.
    private func extract(_ job: Job, _ archive: ArchiveImage, _ entry: ArchiveImage.Entry,
                         into writer: inout SparseWriter) throws(CacheError) -> Duration {
        job.report(compressed: 0, decompressed: 0, total: entry.size)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.outputChunk, alignment: 4096)
        defer { buffer.deallocate() }
        var writing = Duration.zero
        try archive.extract(entry, into: buffer, cancelled: { cancelled.load(ordering: .relaxed) }) { (bytes, archiveBytes) throws(CacheError) in
            let start = ContinuousClock.now
            try append(bytes, to: &writer, for: job)
            writing += start.duration(to: .now)
            job.report(compressed: archiveBytes, decompressed: writer.offset)
            firstOutput(job)
        }
        return writing
    }

    /// The most an image inside an archive may declare: --cache-max, else the size of the cache's filesystem.
    func sizeLimit() throws(CacheError) -> UInt64 {
        if let maxBytes { return maxBytes }
        var info = statvfs()
        guard statvfs(directory, &info) == 0 else { throw .system(operation: "statvfs", path: directory, errno: errno) }
        return UInt64(info.f_blocks) * UInt64(info.f_frsize)
    }
}
