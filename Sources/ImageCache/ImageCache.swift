import Dispatch
import Glibc
import Logging
import Synchronization

/// The image cache (--cache-dir, --cache-max): each image that is not a plain one (compressed, in an
/// archive, a VM disk) is made raw once into a sparse file shared by all its sandboxes, and reused while
/// its file is unchanged.
///
/// Files in the directory (mode 0700), per image NAME and HASH (of the compressed file's path):
/// `NAME.HASH.img` the decompressed image, `NAME.HASH.meta` what it was made from (CacheRecord), and
/// while it is made `NAME.HASH.PID.partial` (renamed to .img once complete and fsynced), and for a VM
/// disk that is compressed or in an archive, `NAME.HASH.stage.PID.partial`: the VM disk itself, read by
/// qemu-img, removed once converted.
///
/// The limit counts allocated bytes (holes are free). Room is made by evicting the least recently used
/// image nobody holds: holders keep a shared flock on the .img (CachedImage), so an exclusive
/// non-blocking flock tells an unused one, also across daemons sharing the directory.
/// Locking: `state` guards jobs and reservations, and is held for directory scans and evictions
/// (small, local file operations), never while data is decoded.
public final class ImageCache: Sendable {
    public let directory: String
    public let maxBytes: UInt64?
    let logger: Logger
    let threads: UInt32
    let memoryLimit: UInt64
    let state = Mutex(State())
    let cancelled = Atomic<Bool>(false)
    let hooks: CacheTestHooks

    struct State {
        /// In-flight decompressions by entry base name.
        var jobs: [String: Job] = [:]
        /// Bytes each in-flight job has reserved under --cache-max, by entry base name.
        var reserved: [String: UInt64] = [:]
        /// Failures that would repeat for an unchanged file (corrupt data, hostile headers).
        var failures: [String: (CacheRecord.Identity, CacheError)] = [:]
    }

    /// The directory is made when the first compressed image is prepared (a daemon serving only plain
    /// images leaves no trace of it).
    public init(directory: String, maxBytes: UInt64?, logger: Logger, hooks: CacheTestHooks = CacheTestHooks()) {
        self.directory = directory
        self.maxBytes = maxBytes
        self.logger = logger
        self.hooks = hooks
        let cores = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        threads = UInt32(max(1, min(cores, 16)))
        let physical = UInt64(max(0, sysconf(Int32(_SC_PHYS_PAGES)))) * UInt64(max(0, sysconf(Int32(_SC_PAGESIZE))))
        // As xz -T0 does: a quarter of RAM for parallel decoding, at least 256 MiB.
        memoryLimit = max(256 << 20, physical / 4)
        sweep()
    }

    /// Stops every decompression in progress (at shutdown): their callers get `.cancelled`.
    public func cancelAll() {
        guard !cancelled.exchange(true, ordering: .sequentiallyConsistent) else { return }
        for job in state.withLock({ Array($0.jobs.values) }).sorted(by: { $0.image < $1.image }) {
            // Cancelled before the line is logged: whoever reads it knows the job cannot be committed any more.
            job.cancel()
            logger.notice("image \(job.image): cancelling its preparation (shutting down)")
        }
    }

    public func preparations() -> [PreparationStatus] {
        let jobs = state.withLock { Array($0.jobs.values) }
        return jobs.map { $0.status() }.sorted { $0.image < $1.image }
    }

    /// Returns the raw image of `file` (resolved path of IMAGES_DIR/NAME.img.xz, NAME.zip, NAME.qcow2 ...),
    /// reusing the cached one while the file is unchanged, else making it (a caller that finds the same
    /// file being made waits for that work). Blocks for as long as that takes.
    public func prepare(image: String, file: String, format: ImageFileName.Kind) throws(CacheError) -> CachedImage {
        guard format != .raw else { throw .refused(file: file, reason: "a plain image needs no cache") }
        let source = try CacheError.open(file, O_RDONLY | O_NOFOLLOW)
        var info = stat()
        guard fstat(source.raw, &info) == 0 else { throw .system(operation: "fstat", path: file, errno: errno) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .hostileHeader(file: file, reason: "not a regular file") }
        let identity = CacheRecord.Identity(info)
        try Self.createDirectory(directory)
        let entry = CacheEntry(directory: directory, image: image, file: file)
        // A second round only after waiting for another caller's job.
        for _ in 0..<3 {
            enum Next { case ready(CachedImage), wait(Job), run(Job) }
            let next = try state.withLock { state throws(CacheError) -> Next in
                if let job = state.jobs[entry.base] { return .wait(job) }
                if let (known, error) = state.failures[entry.base], known == identity { throw error }
                if let cached = entry.lease(matching: identity, source: file) {
                    logger.info("image \(image): reusing \(cached.path) (\(file) unchanged)")
                    return .ready(cached)
                }
                let job = Job(image: image, file: file, format: format, entry: entry, identity: identity,
                              compressedSize: UInt64(info.st_size))
                state.jobs[entry.base] = job
                return .run(job)
            }
            switch next {
            case .ready(let cached): return cached
            case .wait(let job):
                logger.info("image \(image): waiting for its preparation in progress")
                job.finished.wait()
                if let error = job.error.withLock({ $0 }) { throw error }
            case .run(let job):
                return try run(job, sourceFD: source.raw)
            }
        }
        throw .system(operation: "prepare", path: file, errno: EAGAIN)
    }

    /// Runs a job this caller registered, then wakes its waiters.
    private func run(_ job: Job, sourceFD: Int32) throws(CacheError) -> CachedImage {
        let result: Result<CachedImage, CacheError>
        do {
            result = .success(try build(job, sourceFD: sourceFD))
        } catch {
            result = .failure(error)
        }
        state.withLock { state in
            state.jobs[job.entry.base] = nil
            state.reserved[job.entry.base] = nil
            if case .failure(let error) = result, error.isPermanent {
                state.failures[job.entry.base] = (job.identity, error)
            } else {
                state.failures[job.entry.base] = nil
            }
        }
        if case .failure(let error) = result { job.error.withLock { $0 = error } }
        job.finished.leave()
        return try result.get()
    }

    // MARK: Room

    /// Called before `bytes` more are written for `job`: evicts unused images, least recently used first,
    /// until the limit has room, or throws.
    func reserve(_ bytes: UInt64, for job: Job) throws(CacheError) {
        guard let maxBytes else { return }
        try state.withLock { state throws(CacheError) in
            while true {
                let used = usage(state)
                if used + bytes <= maxBytes {
                    state.reserved[job.entry.base, default: 0] += bytes
                    return
                }
                if !evictOne(state, for: job) {
                    throw .noRoom(file: job.file, reason: "--cache-max \(maxBytes) bytes reached (\(used) in use, every other cached image is in use or being made)")
                }
            }
        }
    }

    /// The disk is full: evicts one unused image. False when there is none.
    func makeRoom(for job: Job) -> Bool {
        state.withLock { evictOne($0, for: job) }
    }

    /// Allocated bytes of the directory: this daemon's jobs count what they reserved, other files their blocks.
    private func usage(_ state: State) -> UInt64 {
        let ours = Set(state.jobs.values.flatMap { [$0.entry.partialName, $0.entry.stageName] })
        var total = state.reserved.values.reduce(UInt64(0), +)
        for name in Self.fileNames(in: directory) where !ours.contains(name) {
            var info = stat()
            if lstat("\(directory)/\(name)", &info) == 0, info.st_mode & S_IFMT == S_IFREG {
                total += UInt64(info.st_blocks) * 512
            }
        }
        return total
    }

    /// Evicts the least recently used complete image that no one holds and no job of ours is making.
    private func evictOne(_ state: State, for job: Job) -> Bool {
        let busy = Set(state.jobs.keys)
        let candidates = Self.fileNames(in: directory).compactMap { name -> (base: String, used: timespec)? in
            guard name.hasSuffix(".meta") else { return nil }
            let base = String(name.dropLast(".meta".count))
            var info = stat()
            guard !busy.contains(base), stat("\(directory)/\(name)", &info) == 0 else { return nil }
            return (base, info.st_mtim)
        }.sorted { ($0.used.tv_sec, $0.used.tv_nsec) < ($1.used.tv_sec, $1.used.tv_nsec) }
        for candidate in candidates {
            let entry = CacheEntry(directory: directory, base: candidate.base)
            if let freed = entry.removeIfUnused() {
                logger.notice("cache: evicted \(entry.dataPath) (\(freed / 1_048_576) MiB on disk, least recently used) to make room for \(job.image)")
                return true
            }
        }
        return false
    }

    // MARK: Directory

    static func createDirectory(_ path: String) throws(CacheError) {
        var prefix = ""
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, prefix == path ? 0o700 : 0o755) != 0, errno != EEXIST {
                throw .system(operation: "mkdir", path: prefix, errno: errno)
            }
        }
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw .system(operation: "cache directory", path: path, errno: ENOTDIR)
        }
    }

    static func fileNames(in directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != ".", name != ".." { names.append(name) }
        }
        return names
    }

    /// At start: removes what dead daemons left half made (.partial files of dead pids) and records or
    /// images without their other half, unless someone holds them.
    private func sweep() {
        let names = Self.fileNames(in: directory)
        for name in names where name.hasSuffix(".partial") {
            let parts = name.split(separator: ".")
            guard parts.count >= 3, let pid = Int32(parts[parts.count - 2]) else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                unlink("\(directory)/\(name)")
                logger.info("cache: removed \(directory)/\(name) (its daemon, pid \(pid), is gone)")
            }
        }
        let present = Set(names)
        for name in names where name.hasSuffix(".img") || name.hasSuffix(".meta") {
            let base = String(name.dropLast(name.hasSuffix(".img") ? 4 : 5))
            guard !present.contains(base + ".img") || !present.contains(base + ".meta") else { continue }
            if CacheEntry(directory: directory, base: base).removeIfUnused() != nil {
                logger.info("cache: removed incomplete entry \(directory)/\(base)")
            }
        }
    }
}

/// A job in flight: its progress (for status) and what waiters learn at its end.
final class Job: Sendable {
    let image: String
    let file: String
    let format: ImageFileName.Kind
    let entry: CacheEntry
    let identity: CacheRecord.Identity
    let compressedSize: UInt64
    let started = ContinuousClock.now
    /// Left when the job ends; `error` is set before.
    let finished = DispatchGroup()
    /// Set before `finished` is left, read after waiting on it.
    let error = Mutex<CacheError?>(nil)
    /// CacheTestHooks.firstOutput ran for this job.
    let reachedFirstOutput = Mutex(false)
    private let progress = Mutex((compressed: UInt64(0), decompressed: UInt64(0), total: UInt64(0)))
    /// The helper process working for the job (qemu-img), and whether the job was cancelled.
    private let child = Mutex((pid: pid_t?.none, cancelled: false))

    init(image: String, file: String, format: ImageFileName.Kind, entry: CacheEntry, identity: CacheRecord.Identity, compressedSize: UInt64) {
        self.image = image
        self.file = file
        self.format = format
        self.entry = entry
        self.identity = identity
        self.compressedSize = compressedSize
        finished.enter()
    }

    func report(compressed: UInt64, decompressed: UInt64, total: UInt64? = nil) {
        progress.withLock {
            $0.compressed = compressed
            $0.decompressed = decompressed
            if let total { $0.total = total }
        }
    }

    var label: String { ImageFileName(name: image, kind: format).label }

    /// Cancels the job: its helper process, if any, is killed (its run then ends with `.cancelled`).
    func cancel() {
        child.withLock {
            $0.cancelled = true
            if let pid = $0.pid { kill(pid, SIGTERM) }
        }
    }

    /// Records the job's helper process (killed at once when the job was cancelled before it started).
    func adopt(child pid: pid_t) {
        child.withLock {
            $0.pid = pid
            if $0.cancelled { kill(pid, SIGTERM) }
        }
    }

    /// Forgets the reaped helper process; true when the job was cancelled.
    func release(child pid: pid_t) -> Bool {
        child.withLock {
            $0.pid = nil
            return $0.cancelled
        }
    }

    func status() -> PreparationStatus {
        let now = progress.withLock { $0 }
        let elapsed = started.duration(to: .now).components
        return PreparationStatus(image: image, file: file, format: label, compressedBytesDone: now.compressed,
                                 compressedBytesTotal: compressedSize, bytesDone: now.decompressed, bytesTotal: now.total,
                                 seconds: Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
    }
}
