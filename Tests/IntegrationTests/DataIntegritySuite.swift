import Foundation
import Glibc
import TestSupport
import Testing

/// A data-integrity exerciser in the style of fsx: a seeded sequence of random operations on one file,
/// every read checked byte for byte against an in-memory model of the file. The same sequence runs on the
/// sandbox's hidden mount (which checks the model) and through FUSE.
/// IMGSANDBOX_FSX_SEED and IMGSANDBOX_FSX_OPS replay another sequence.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct DataIntegritySuite {
    /// Seeds (hex) of the sequences to run: two fixed ones, or IMGSANDBOX_FSX_SEED alone.
    static let seeds: [UInt64] = ProcessInfo.processInfo.environment["IMGSANDBOX_FSX_SEED"].flatMap { UInt64($0, radix: 16) }
        .map { [$0] } ?? [0x00f5_0001, 0x00f5_0002]
    static let operations = ProcessInfo.processInfo.environment["IMGSANDBOX_FSX_OPS"].flatMap { Int($0) } ?? 20_000

    @Test(arguments: seeds)
    func randomOperationsMatchTheModel(seed: UInt64) throws {
        let fixture = try ConformanceFixture()
        defer { fixture.close() }
        for (side, directory) in [("hidden mount", fixture.directScratch), ("FUSE", fixture.fuseScratch)] {
            let start = Date()
            var exerciser = Exerciser(path: directory + "/fsx.bin", seed: seed)
            let failure = exerciser.run(Self.operations)
            exerciser.finish()
            let seconds = Date().timeIntervalSince(start)
            #expect(failure == nil, Comment(rawValue: "\(side): seed \(String(seed, radix: 16)): \(failure ?? "")"))
            print("fsx \(side): \(Self.operations) operations, seed \(String(seed, radix: 16)),"
                + " \(String(format: "%.1f", seconds)) s, largest size \(exerciser.largest), counts \(exerciser.counts.sorted { $0.key < $1.key })")
        }
    }
}



/// Runs the operations on one file and keeps the model.
struct Exerciser {
    static let maxSize = 3 << 20 + 12_345
    static let maxLength = 1 << 16
    static let page = 4096

    let path: String
    var random: SplitMix64
    var model: [UInt8] = []
    var fd: Int32 = -1
    var counts: [String: Int] = [:]
    /// The last operations, for the failure report.
    var recent: [String] = []
    var index = 0
    var largest = 0

    init(path: String, seed: UInt64) {
        self.path = path
        random = SplitMix64(seed: seed)
    }

    mutating func finish() {
        if fd >= 0 { close(fd) }
        fd = -1
        unlink(path)
    }

    /// Runs `count` operations; returns nil or what went wrong, with the operations before it.
    mutating func run(_ count: Int) -> String? {
        fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return "open \(path): \(ErrnoName.of(errno))" }
        for number in 0..<count {
            index = number
            if let problem = step() ?? checkSize() ?? (number % 1000 == 999 ? verifyAll() : nil) {
                return "operation \(number): \(problem)\nlast operations:\n" + recent.joined(separator: "\n")
            }
        }
        return verifyAll().map { "final check: \($0)" }
    }

    // MARK: choosing offsets and lengths

    /// An offset anywhere up to a bit past the end, or (one time in three) within a few bytes of a 4 KiB boundary.
    mutating func offset(limit: Int) -> Int {
        let top = max(limit, 1)
        if Int.random(in: 0..<3, using: &random) == 0 {
            let boundary = Int.random(in: 0...(top / Self.page), using: &random) * Self.page
            return min(max(boundary + Int.random(in: -3...3, using: &random), 0), top)
        }
        return Int.random(in: 0...top, using: &random)
    }

    mutating func length(max limit: Int = Exerciser.maxLength) -> Int {
        switch Int.random(in: 0..<4, using: &random) {
        case 0: return Int.random(in: 1...16, using: &random)
        case 1: return Self.page + Int.random(in: -2...2, using: &random)
        default: return Int.random(in: 1...limit, using: &random)
        }
    }

    mutating func note(_ name: String, _ detail: String) {
        counts[name, default: 0] += 1
        largest = max(largest, model.count)
        recent.append("\(index) \(name) \(detail) (size \(model.count))")
        if recent.count > 25 { recent.removeFirst() }
    }

    // MARK: operations

    mutating func step() -> String? {
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<22: return write()
        case 22..<40: return read()
        case 40..<47: return truncate()
        case 47..<54: return allocate()
        case 54..<62: return mapRead()
        case 62..<70: return mapWrite()
        case 70..<78: return copyRange()
        case 78..<82:
            note("fsync", "")
            return fsync(fd) == 0 ? nil : "fsync: \(ErrnoName.of(errno))"
        case 82..<86: return reopen()
        case 86..<91: return directRead()
        case 91..<95: return readOnlyReopen()
        default: return read()
        }
    }

    /// Fills `count` bytes at `base` with a pattern of the operation number and file offset.
    func pattern(_ base: UnsafeMutableRawPointer, count: Int, offset: Int) {
        let salt = UInt8(truncatingIfNeeded: index &* 31 &+ 1)
        let bytes = base.assumingMemoryBound(to: UInt8.self)
        for i in 0..<count { bytes[i] = UInt8(truncatingIfNeeded: (offset + i) &* 7) ^ salt }
    }

    mutating func setModel(at offset: Int, _ source: UnsafeRawPointer, count: Int) {
        if offset + count > model.count { model += [UInt8](repeating: 0, count: offset + count - model.count) }
        model.withUnsafeMutableBytes { _ = memcpy($0.baseAddress! + offset, source, count) }
    }

    mutating func zeroModel(at offset: Int, count: Int) {
        let end = min(offset + count, model.count)
        guard end > offset else { return }
        model.withUnsafeMutableBytes { _ = memset($0.baseAddress! + offset, 0, end - offset) }
    }

    mutating func resizeModel(_ size: Int) {
        if size < model.count { model.removeSubrange(size...) } else { model += [UInt8](repeating: 0, count: size - model.count) }
    }

    mutating func write() -> String? {
        let count = length()
        let at = min(offset(limit: model.count + Self.page), Self.maxSize - count)
        note("pwrite", "\(at)+\(count)")
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 8)
        defer { buffer.deallocate() }
        pattern(buffer, count: count, offset: at)
        let written = pwrite(fd, buffer, count, off_t(at))
        guard written == count else { return "pwrite \(at)+\(count): \(written < 0 ? ErrnoName.of(errno) : "short \(written)")" }
        setModel(at: at, buffer, count: count)
        return nil
    }

    /// Compares `count` file bytes at `offset` (already read into `bytes`) with the model.
    func compare(_ what: String, _ bytes: UnsafeRawPointer, offset: Int, count: Int) -> String? {
        let expected = max(min(model.count - offset, count), 0)
        guard expected > 0 else { return nil }
        let same = model.withUnsafeBytes { memcmp($0.baseAddress! + offset, bytes, expected) == 0 }
        guard !same else { return nil }
        let got = bytes.assumingMemoryBound(to: UInt8.self)
        let first = model.withUnsafeBytes { m in (0..<expected).first { m[offset + $0] != got[$0] } } ?? 0
        return "\(what) \(offset)+\(count): first difference at file offset \(offset + first):"
            + " expected \(model[offset + first]), got \(got[first])"
    }

    mutating func read() -> String? {
        let count = length()
        let at = offset(limit: model.count)
        note("pread", "\(at)+\(count)")
        return readCheck(at: at, count: count)
    }

    /// Reads `count` bytes at `at` from `fd` (the open file unless given) and compares them with the model.
    func readCheck(at: Int, count: Int, fd: Int32? = nil, label: String = "pread", alignment: Int = 8) -> String? {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: alignment)
        defer { buffer.deallocate() }
        var done = 0
        while done < count {
            let got = pread(fd ?? self.fd, buffer + done, count - done, off_t(at + done))
            if got < 0 { return "\(label) \(at)+\(count): \(ErrnoName.of(errno))" }
            if got == 0 { break }
            done += got
        }
        let expected = max(min(model.count - at, count), 0)
        guard done == expected else { return "\(label) \(at)+\(count): \(done) bytes, expected \(expected)" }
        return compare(label, buffer, offset: at, count: done)
    }

    mutating func truncate() -> String? {
        let size = Int.random(in: 0..<3, using: &random) == 0
            ? offset(limit: Self.maxSize) : Int.random(in: 0...Self.maxSize, using: &random)
        note("ftruncate", "\(size)")
        guard ftruncate(fd, off_t(size)) == 0 else { return "ftruncate \(size): \(ErrnoName.of(errno))" }
        resizeModel(size)
        return nil
    }

    mutating func allocate() -> String? {
        let count = length(max: 1 << 18)
        let at = min(offset(limit: model.count + Self.page), Self.maxSize - count)
        let modes: [(String, Int32)] = [("KEEP_SIZE", Posix.FALLOC_FL_KEEP_SIZE),
                                        ("PUNCH_HOLE|KEEP_SIZE", Posix.FALLOC_FL_PUNCH_HOLE | Posix.FALLOC_FL_KEEP_SIZE),
                                        ("ZERO_RANGE", Posix.FALLOC_FL_ZERO_RANGE),
                                        ("ZERO_RANGE|KEEP_SIZE", Posix.FALLOC_FL_ZERO_RANGE | Posix.FALLOC_FL_KEEP_SIZE),
                                        ("0", 0)]
        let (name, mode) = modes[Int.random(in: 0..<modes.count, using: &random)]
        note("fallocate \(name)", "\(at)+\(count)")
        guard Posix.fallocate(fd, mode, Int64(at), Int64(count)) == 0 else {
            return "fallocate \(name) \(at)+\(count): \(ErrnoName.of(errno))"
        }
        if mode & (Posix.FALLOC_FL_PUNCH_HOLE | Posix.FALLOC_FL_ZERO_RANGE) != 0 { zeroModel(at: at, count: count) }
        if mode & Posix.FALLOC_FL_KEEP_SIZE == 0, at + count > model.count { resizeModel(at + count) }
        return nil
    }

    mutating func mapRead() -> String? {
        guard !model.isEmpty else { return read() }
        let count = min(length(), model.count)
        let at = Int.random(in: 0...(model.count - count), using: &random)
        note("mmap read", "\(at)+\(count)")
        guard let map = mmap(nil, model.count, PROT_READ, MAP_SHARED, fd, 0), map != Posix.mapFailed else {
            return "mmap read: \(ErrnoName.of(errno))"
        }
        defer { munmap(map, model.count) }
        return compare("mmap read", map + at, offset: at, count: count)
    }

    mutating func mapWrite() -> String? {
        guard !model.isEmpty else { return write() }
        let count = min(length(), model.count)
        let at = Int.random(in: 0...(model.count - count), using: &random)
        note("mmap write", "\(at)+\(count)")
        guard let map = mmap(nil, model.count, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != Posix.mapFailed else {
            return "mmap write: \(ErrnoName.of(errno))"
        }
        defer { munmap(map, model.count) }
        pattern(map + at, count: count, offset: at)
        setModel(at: at, map + at, count: count)
        guard msync(map, model.count, MS_SYNC) == 0 else { return "msync: \(ErrnoName.of(errno))" }
        return nil
    }

    mutating func copyRange() -> String? {
        guard model.count > 1 else { return write() }
        var count = min(length(), model.count / 2)
        let source = Int.random(in: 0...(model.count - count), using: &random)
        // The ranges may not overlap in one file (EINVAL): put the target before or after the source.
        var target: Int
        if source >= count, Bool.random(using: &random) {
            target = Int.random(in: 0...(source - count), using: &random)
        } else {
            target = min(source + count + offset(limit: Self.page * 4), Self.maxSize - count)
            if target < source + count { return nil }
        }
        note("copy_file_range", "\(source) -> \(target) +\(count)")
        var from = off_t(source), to = off_t(target)
        while count > 0 {
            let copied = Posix.copyFileRange(fd, &from, fd, &to, count, 0)
            if copied < 0 { return "copy_file_range \(from) -> \(to) +\(count): \(ErrnoName.of(errno))" }
            if copied == 0 { return "copy_file_range \(from) -> \(to) +\(count): copied nothing" }
            // The source range lies below the old end, so the model holds it.
            let chunk = Array(model[Int(from) - copied..<Int(from)])
            chunk.withUnsafeBytes { setModel(at: Int(to) - copied, $0.baseAddress!, count: copied) }
            count -= copied
        }
        return nil
    }

    /// An O_DIRECT read of whole aligned pages through a second descriptor: it bypasses the page cache, so
    /// it sees what the daemon wrote to the hidden mount (msync'ed pages, copied and punched ranges).
    mutating func directRead() -> String? {
        let pages = Int.random(in: 1...16, using: &random)
        let at = Int.random(in: 0...(model.count / Self.page + 1), using: &random) * Self.page
        let count = pages * Self.page
        note("O_DIRECT pread", "\(at)+\(count)")
        let direct = open(path, O_RDONLY | Posix.O_DIRECT | O_CLOEXEC)
        guard direct >= 0 else { return "open O_DIRECT: \(ErrnoName.of(errno))" }
        defer { close(direct) }
        return readCheck(at: at, count: count, fd: direct, label: "O_DIRECT pread", alignment: Self.page)
    }

    mutating func reopen() -> String? {
        note("close+open", "")
        guard close(fd) == 0 else { return "close: \(ErrnoName.of(errno))" }
        fd = open(path, O_RDWR | O_CLOEXEC)
        return fd >= 0 ? nil : "open \(path): \(ErrnoName.of(errno))"
    }

    /// The file alone, opened read-only (with passthrough a file under 1 MiB is then served from FUSE's
    /// page cache, a bigger one passes through: BackingFiles), checked, then a writer joins it (sharing that
    /// mode, as the kernel requires) and the next operations use the writer.
    mutating func readOnlyReopen() -> String? {
        note("close+open O_RDONLY", "")
        guard close(fd) == 0 else { return "close: \(ErrnoName.of(errno))" }
        let reader = open(path, O_RDONLY | O_CLOEXEC)
        guard reader >= 0 else { return "open O_RDONLY \(path): \(ErrnoName.of(errno))" }
        defer { close(reader) }
        let check = readCheck(at: offset(limit: model.count), count: length(), fd: reader, label: "O_RDONLY pread")
        fd = open(path, O_RDWR | O_CLOEXEC)
        return check ?? (fd >= 0 ? nil : "open \(path) beside a reader: \(ErrnoName.of(errno))")
    }

    func checkSize() -> String? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return "fstat: \(ErrnoName.of(errno))" }
        return Int(st.st_size) == model.count ? nil : "size \(st.st_size), expected \(model.count)"
    }

    /// Reads the whole file back, through the fd and through a fresh open.
    func verifyAll() -> String? {
        if let problem = readCheck(at: 0, count: model.count + 1) { return "whole file: " + problem }
        let again = open(path, O_RDONLY | O_CLOEXEC)
        guard again >= 0 else { return "open \(path): \(ErrnoName.of(errno))" }
        defer { close(again) }
        let bytes = Posix.readAll(again)
        guard bytes.count == model.count else { return "reopened: \(bytes.count) bytes, expected \(model.count)" }
        return bytes.withUnsafeBytes { compare("reopened", $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, offset: 0, count: bytes.count) }
    }
}
