import Foundation
import Glibc
import Logging
import TestSupport
import Testing
@testable import ImageCache

/// Log lines a cache wrote, for "one log line" checks.
// @unchecked: LogHandler needs settable logLevel/metadata, which no test changes once the cache has the
// handler; the lines themselves are behind `lock`.
final class CapturedLog: LogHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) { lock.withLock { stored.append(event.message.description) } }
    var lines: [String] { lock.withLock { stored } }
    func count(_ text: String) -> Int { lines.filter { $0.contains(text) }.count }
}

extension CacheFixture {
    func cache(max: UInt64? = nil, log: CapturedLog, hooks: CacheTestHooks = CacheTestHooks()) -> ImageCache {
        ImageCache(directory: cacheDirectory, maxBytes: max, logger: Logger(label: "test") { _ in log }, hooks: hooks)
    }

    /// ROOT/NAME with `bytes` appended.
    func appending(_ bytes: [UInt8], to file: String, as name: String) throws -> String {
        let path = root + "/" + name
        var data = try Data(contentsOf: URL(fileURLWithPath: file))
        data.append(contentsOf: bytes)
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    func expectRefusal(_ cache: ImageCache, _ file: String, _ format: ImageFileName.Kind, errno expected: Int32, saying text: String,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(sourceLocation: sourceLocation) {
            _ = try cache.prepare(image: "test", file: file, format: format)
        } throws: { error in
            guard let error = error as? CacheError else { return false }
            return error.errno == expected && "\(error)".contains(text)
        }
        #expect(cacheFiles.isEmpty, "\(cacheFiles)", sourceLocation: sourceLocation)
    }
}

/// OpenWrt's fwtool metadata after the gzip stream: JSON, then a trailer.
let fwtoolTrailer = Array(#"{"metadata_version":"1.1","compat_version":"1.0","supported_devices":["rpi-4"]}"#.utf8) + Array("FWx0".utf8) + [0, 0, 0, 88]

@Suite struct TrailingDataTests {
    @Test(arguments: [(Compression.gzip, true), (.xz, true), (.xz, false), (.zstd, true), (.bzip2, true)])
    func dataAfterTheStreamIsIgnoredWithOneLogLine(compression: Compression, blocks: Bool) throws {
        let fixture = try CacheFixture()
        let file = try fixture.compress(fixture.plain, compression, blocks: blocks)
        // xz's own stream padding (zeros, a multiple of 4) before the garbage, as dd to a block size leaves.
        let trailer = (compression == .xz ? [UInt8](repeating: 0, count: 8) : []) + fwtoolTrailer
        let trailing = try fixture.appending(trailer, to: file, as: "trailing.img" + compression.suffix)
        let log = CapturedLog()
        let image = try fixture.cache(log: log).prepare(image: "test", file: trailing, format: .compressed(compression))
        #expect(FileManager.default.contentsEqual(atPath: image.path, andPath: fixture.plain))
        #expect(log.count("bytes after the end of the \(compression.rawValue) data") == 1, "\(log.lines)")
    }

    /// A byte of garbage, and one that starts like another member: decided at the end of the file.
    @Test func shortTrailersAreIgnoredToo() throws {
        let fixture = try CacheFixture()
        let gz = try fixture.compress(fixture.plain, .gzip)
        for (index, trailer) in [[UInt8(0x1f)], [0x00], [0x28, 0xb5]].enumerated() {
            let path = try fixture.appending(trailer, to: gz, as: "short\(index).img.gz")
            let log = CapturedLog()
            let image = try fixture.cache(log: log).prepare(image: "s\(index)", file: path, format: .compressed(.gzip))
            #expect(FileManager.default.contentsEqual(atPath: image.path, andPath: fixture.plain))
            #expect(log.count("ignoring \(trailer.count) bytes after the end") == 1, "\(log.lines)")
        }
    }

    /// What follows with a member's magic is decoded, and its corruption is an error (as with gzip -d).
    @Test func aCorruptSecondMemberIsStillAnError() throws {
        let fixture = try CacheFixture()
        let gz = try fixture.compress(fixture.plain, .gzip)
        let bad = try fixture.appending([0x1f, 0x8b, 0x08, 0x00] + fwtoolTrailer, to: gz, as: "bad.img.gz")
        fixture.expectRefusal(try fixture.cache(), bad, .compressed(.gzip), errno: EIO, saying: "corrupt gzip data")
    }

    /// Data corrupt before the stream's end stays EIO, also with trailing data behind it.
    @Test(arguments: [Compression.gzip, .xz, .zstd, .bzip2])
    func corruptionBeforeTheEndStaysAnError(compression: Compression) throws {
        let fixture = try CacheFixture()
        let file = try fixture.compress(fixture.plain, compression)
        let size = Int(try FileManager.default.attributesOfItem(atPath: file)[.size] as! UInt64)
        try flipByte(file, at: size / 3)
        let bad = try fixture.appending(fwtoolTrailer, to: file, as: "flipped.img" + compression.suffix)
        fixture.expectRefusal(try fixture.cache(), bad, .compressed(compression), errno: EIO, saying: "corrupt")
    }
}
