import Foundation
import Glibc
import Logging
import Synchronization
import TestSupport
import Testing
@testable import ImageCache

/// A temp folder with a test image (data, zero runs, an unaligned tail) and its compressed forms, made
/// with the xz, gzip and zstd tools (Tools/install-deps installs them).
final class CacheFixture: Sendable {
    let root: String
    let cacheDirectory: String
    let plain: String
    static let logger = Logger(label: "test")

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("imgsandbox-cache-\(UUID().uuidString.prefix(8))").path
        cacheDirectory = root + "/cache"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        plain = root + "/plain.img"
        try Self.pattern(seed: 1).write(to: URL(fileURLWithPath: plain))
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    /// 1 MiB of data, 2 MiB of zeros, 1 MiB of data, 3 MiB of zeros, 1,000 bytes of data.
    static func pattern(seed: UInt64) -> Data {
        var state = seed
        func noise(_ count: Int) -> Data {
            var words = [UInt64](repeating: 0, count: (count + 7) / 8)
            for index in words.indices {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                words[index] = state
            }
            return words.withUnsafeBytes { Data($0.prefix(count)) }
        }
        return noise(1 << 20) + Data(count: 2 << 20) + noise(1 << 20) + Data(count: 3 << 20) + noise(1000)
    }

    /// Compresses `source` with `format`'s tool into ROOT/NAME.img.SUFFIX; returns the path.
    func compress(_ source: String, _ format: Compression, name: String = "test", blocks: Bool = true) throws -> String {
        let path = root + "/" + name + ".img" + format.suffix
        let command: String
        switch format {
        case .xz: command = blocks ? "xz -T2 --block-size=256KiB -3 -c" : "xz -T1 -3 -c"
        case .gzip: command = "gzip -1 -c"
        case .zstd: command = "zstd -q -3 -c"
        case .bzip2: command = "bzip2 -1 -c"
        }
        try shell("\(command) '\(source)' > '\(path)'")
        return path
    }

    func shell(_ command: String) throws {
        guard Subprocess.run(["/bin/sh", "-c", command], output: .discarded).status == 0 else { throw CocoaError(.fileWriteUnknown) }
    }

    func cache(max: UInt64? = nil) throws -> ImageCache {
        ImageCache(directory: cacheDirectory, maxBytes: max, logger: Self.logger)
    }

    var cacheFiles: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: cacheDirectory)) ?? []).sorted() }

    static func allocated(_ path: String) -> UInt64 {
        var info = stat()
        return stat(path, &info) == 0 ? UInt64(info.st_blocks) * 512 : 0
    }
}

@Suite struct ImageCacheTests {
    @Test(arguments: [(Compression.xz, true), (.xz, false), (.gzip, true), (.zstd, true), (.bzip2, true)])
    func decompressesSparselyAndReuses(compression: Compression, blocks: Bool) throws {
        let format = ImageFileName.Kind.compressed(compression)
        let fixture = try CacheFixture()
        let file = try fixture.compress(fixture.plain, compression, blocks: blocks)
        let cache = try fixture.cache()
        let first = try cache.prepare(image: "test", file: file, format: format)
        #expect(!first.reused)
        #expect(FileManager.default.contentsEqual(atPath: first.path, andPath: fixture.plain))
        // 5 MiB of zeros are holes: at most the 2 MiB of data (+ a page) is allocated.
        #expect(CacheFixture.allocated(first.path) <= (2 << 20) + 8192)
        let second = try cache.prepare(image: "test", file: file, format: format)
        #expect(second.reused)
        #expect(second.path == first.path)
        // A new cache object (a daemon restart) reuses it too.
        let again = try fixture.cache().prepare(image: "test", file: file, format: format)
        #expect(again.reused)
        #expect(fixture.cacheFiles.count == 2)
    }

    @Test func replacedFileIsDecompressedAgain() throws {
        let fixture = try CacheFixture()
        let file = try fixture.compress(fixture.plain, .xz)
        let cache = try fixture.cache()
        do { _ = try cache.prepare(image: "test", file: file, format: .compressed(.xz)) }
        let other = fixture.root + "/other.img"
        try CacheFixture.pattern(seed: 2).write(to: URL(fileURLWithPath: other))
        let staged = try fixture.compress(other, .xz, name: "staged")
        #expect(rename(staged, file) == 0)
        let replaced = try cache.prepare(image: "test", file: file, format: .compressed(.xz))
        #expect(!replaced.reused)
        #expect(FileManager.default.contentsEqual(atPath: replaced.path, andPath: other))
        #expect(fixture.cacheFiles.count == 2)
    }

    @Test(arguments: [Compression.xz, .gzip, .zstd, .bzip2])
    func corruptAndTruncatedFilesLeaveNothing(compression: Compression) throws {
        let format = ImageFileName.Kind.compressed(compression)
        let fixture = try CacheFixture()
        let file = try fixture.compress(fixture.plain, compression)
        let size = Int(try FileManager.default.attributesOfItem(atPath: file)[.size] as! UInt64)
        let cut = fixture.root + "/cut.img" + compression.suffix
        try fixture.shell("head -c \(size / 2) '\(file)' > '\(cut)'")
        // A byte in the middle of the compressed data (inside a block, past the headers).
        try flipByte(file, at: size / 3)
        let cache = try fixture.cache()
        for path in [file, cut] {
            #expect {
                _ = try cache.prepare(image: "test", file: path, format: format)
            } throws: { error in
                guard let error = error as? CacheError, error.errno == EIO else { return false }
                return "\(error)".contains("offset")
            }
            #expect(fixture.cacheFiles.isEmpty, "\(fixture.cacheFiles)")
        }
    }

    @Test func concurrentCallersShareOneDecompression() throws {
        let fixture = try CacheFixture()
        let file = try fixture.compress(fixture.plain, .gzip)
        let cache = try fixture.cache()
        let results = Mutex<[Bool]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            if let image = try? cache.prepare(image: "test", file: file, format: .compressed(.gzip)) {
                results.withLock { $0.append(image.reused) }
            }
        }
        let reused = results.withLock { $0 }
        #expect(reused.count == 4)
        #expect(reused.filter { !$0 }.count == 1)
    }

    @Test func limitEvictsTheLeastRecentlyUsedUnusedImage() throws {
        let fixture = try CacheFixture()
        let files = try ["a", "b", "c"].map { try fixture.compress(fixture.plain, .zstd, name: $0) }
        func prepare(_ index: Int, _ cache: ImageCache) throws -> CachedImage {
            try cache.prepare(image: ["a", "b", "c"][index], file: files[index], format: .compressed(.zstd))
        }
        func cached(_ name: String) -> Bool { fixture.cacheFiles.contains { $0.hasPrefix(name + ".") && $0.hasSuffix(".img") } }
        // Each image allocates about 2 MiB: room for two, not three.
        let cache = try fixture.cache(max: 5 << 20)
        _ = try prepare(0, cache)
        _ = try prepare(1, cache)
        // a used again, after b: b is now the least recently used.
        #expect(try prepare(0, cache).reused)
        let c = try prepare(2, cache)
        #expect(cached("a") && !cached("b") && cached("c"))
        // With a and c in use, b finds nothing to evict: refused, no partial file left.
        let a = try prepare(0, cache)
        #expect {
            _ = try prepare(1, cache)
        } throws: { ($0 as? CacheError)?.errno == ENOSPC }
        #expect(fixture.cacheFiles.count == 4, "\(fixture.cacheFiles)")
        #expect(cached("a") && cached("c"))
        _ = (a, c)
    }

    @Test func recordRoundTripsAndRejectsTornText() throws {
        let record = CacheRecord(source: "/images/x.img.xz", format: "xz",
                                 identity: .init(device: 2049, inode: 12, size: 999, mtimeSeconds: 1_700_000_000, mtimeNanoseconds: 5),
                                 cacheInode: 77, cacheSize: 1 << 30)
        #expect(CacheRecord.parse(record.encoded()) == record)
        let text = record.encoded()
        #expect(CacheRecord.parse(String(text.dropLast(3))) == nil)
        #expect(CacheRecord.parse(text.replacingOccurrences(of: "inode 12", with: "inode x")) == nil)
        #expect(CacheRecord.parse("") == nil)
    }

    @Test func dataRunsSkipZeroPages() {
        let page = SparseWriter.pageSize
        var bytes = [UInt8](repeating: 0, count: page * 5 + 10)
        bytes[page + 7] = 1
        bytes[page * 2] = 1
        bytes[page * 5 + 9] = 1
        let runs = bytes.withUnsafeBytes { SparseWriter.dataRuns($0) }
        #expect(runs == [page..<(page * 3), (page * 5)..<(page * 5 + 10)])
        let zeros = [UInt8](repeating: 0, count: page * 3)
        #expect(zeros.withUnsafeBytes { SparseWriter.dataRuns($0) }.isEmpty)
    }

    @Test func fileNames() {
        func parse(_ name: String) -> (String, ImageFileName.Kind)? { ImageFileName.parse(name).map { ($0.name, $0.kind) } }
        #expect(parse("raspios.img")! == ("raspios", .raw))
        #expect(parse("fedora.raw.xz")! == ("fedora", .compressed(.xz)))
        #expect(parse("yocto.wic.bz2")! == ("yocto", .compressed(.bzip2)))
        #expect(parse("a.b.sdimg.zst")! == ("a.b", .compressed(.zstd)))
        #expect(parse("openwrt.img.gz")! == ("openwrt", .compressed(.gzip)))
        #expect(parse("raspbian.zip")! == ("raspbian", .archive(.zip, nil)))
        #expect(parse("raspbian.img.zip")! == ("raspbian", .archive(.zip, nil)))
        #expect(parse("haos.vmdk.zip")! == ("haos", .archive(.zip, nil)))
        #expect(parse("dietpi.7z")! == ("dietpi", .archive(.sevenZip, nil)))
        #expect(parse("cloud.tar.xz")! == ("cloud", .archive(.tar, .xz)))
        #expect(parse("cloud.tar")! == ("cloud", .archive(.tar, nil)))
        #expect(parse("debian.qcow2")! == ("debian", .vm(.qcow2, nil)))
        #expect(parse("haos.qcow2.xz")! == ("haos", .vm(.qcow2, .xz)))
        #expect(parse("w.vhd")! == ("w", .vm(.vpc, nil)))
        #expect(parse("w.vhdx")! == ("w", .vm(.vhdx, nil)))
        for refused in ["x.xz", "x.zip.xz", "x.7z.gz", ".img", ".hidden.img", "notes.txt", "x.iso", "img"] {
            #expect(ImageFileName.parse(refused) == nil, "\(refused)")
        }
        // Served first among files of one NAME: plain, compressed, archive, VM disk.
        let ranks = ["r.img", "r.img.xz", "r.zip", "r.qcow2"].map { ImageFileName.parse($0)!.kind.rank }
        #expect(ranks == ranks.sorted() && Set(ranks).count == 4)
        // tar's short forms.
        #expect(parse("rootfs.tgz")! == ("rootfs", .archive(.tar, .gzip)))
        #expect(parse("rootfs.txz")! == ("rootfs", .archive(.tar, .xz)))
        #expect(parse("rootfs.tbz2")! == ("rootfs", .archive(.tar, .bzip2)))
        #expect(parse("rootfs.tbz")! == ("rootfs", .archive(.tar, .bzip2)))
        #expect(parse("rootfs.tzst")! == ("rootfs", .archive(.tar, .zstd)))
        for refused in [".tgz", "x.tgz.xz", ".hidden.txz"] {
            #expect(ImageFileName.parse(refused) == nil, "\(refused)")
        }
    }
}

/// A tiny lock-protected value for the concurrency test.
