import Glibc

extension ImageCache {
    /// Makes the job's file raw into BASE.PID.partial (decompressed, extracted from its archive or
    /// converted by qemu-img), then commits it as the entry. On any failure the partial file (and a
    /// staged VM disk) is removed: nothing is cached from a file that was not read to its end.
    func build(_ job: Job, sourceFD: Int32) throws(CacheError) -> CachedImage {
        defer { close(sourceFD) }
        let entry = job.entry
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
        var writing = Duration.zero
        switch job.format {
        case .raw:
            throw .refused(file: job.file, reason: "a plain image needs no cache")
        case .compressed(let compression):
            writing = try decompress(job, compression, from: sourceFD, into: &writer)
        case .archive(let format, let compression):
            let archive = ArchiveImage(fd: sourceFD, format: format, filter: compression, file: job.file)
            let chosen = try archive.choose(limit: try sizeLimit(), logger: logger, image: job.image)
            logger.info("image \(job.image): extracting \(chosen.printed) (\(Self.mib(chosen.size)) MiB) from \(job.file) (\(job.label), \(Self.mib(job.compressedSize)) MiB)")
            if let vm = chosen.vmFormat {
                try staged(job, vm, into: &writer) { (stage) throws(CacheError) in
                    _ = try extract(job, archive, chosen, into: &stage)
                }
            } else {
                writing = try extract(job, archive, chosen, into: &writer)
            }
        case .vm(let format, nil):
            try convert(job, format, diskFD: sourceFD, into: &writer)
        case .vm(let format, let compression?):
            try staged(job, format, into: &writer) { (stage) throws(CacheError) in
                _ = try decompress(job, compression, from: sourceFD, into: &stage)
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
        try entry.commit(partialFD: fd, record: record)
        keep = true
        let seconds = Self.seconds(job.started.duration(to: .now))
        logger.info("image \(job.image): ready in \(Self.format(seconds)) s: \(Self.mib(writer.offset)) MiB at \(Self.format(Double(writer.offset) / 1_048_576 / max(seconds, 0.001))) MiB/s, \(Self.mib(UInt64(info.st_blocks) * 512)) MiB on disk (made in \(Self.format(Self.seconds(job.started.duration(to: made)))) s, \(Self.format(Self.seconds(writing))) s of it writing; fsync \(Self.format(Self.seconds(made.duration(to: synced)))) s)")
        return CachedImage(path: entry.dataPath, recordPath: entry.recordPath, fd: fd, size: writer.offset, reused: false)
    }

    /// A VM disk that is compressed or in an archive: `fill` writes it to BASE.stage.PID.partial (qemu-img
    /// needs a file it can seek in), then it is converted into `writer`'s file and removed.
    private func staged(_ job: Job, _ format: VMDiskFormat, into writer: inout SparseWriter,
                        _ fill: (inout SparseWriter) throws(CacheError) -> Void) throws(CacheError) {
        let path = job.entry.stagePath
        unlink(path)
        let stageFD = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard stageFD >= 0 else { throw .system(operation: "create", path: path, errno: errno) }
        defer {
            close(stageFD)
            unlink(path)
        }
        var stage = SparseWriter(fd: stageFD, path: path)
        try fill(&stage)
        guard ftruncate(stageFD, off_t(stage.offset)) == 0 else { throw .system(operation: "ftruncate", path: path, errno: errno) }
        try convert(job, format, diskFD: stageFD, into: &writer)
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
            passGateOnce(job)
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
