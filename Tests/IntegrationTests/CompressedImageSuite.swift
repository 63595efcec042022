import Foundation
import Glibc
import TestSupport
import Testing

/// NAME.img.xz/.gz/.zst served like NAME.img through the decompression cache (--cache-dir, --cache-max):
/// same content, cache reused across restarts and invalidated by a new file, eviction, and bad files
/// refused with one errno and one log line, leaving nothing in the cache and no device.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct CompressedImageSuite {
    static let suffixes = ["xz-blocks": ".img.xz", "xz": ".img.xz", "gz": ".img.gz", "zst": ".img.zst"]

    /// Makes IMAGES_DIR/NAME.img.SUFFIX with Tools/make-test-image and records its checksum (close() checks it).
    @discardableResult
    static func makeCompressed(_ fixture: ServeFixture, _ name: String, _ compress: String, kind: String = "rpi",
                               extra: [String] = [], directory: String? = nil) throws -> String {
        let path = "\(directory ?? fixture.images)/\(name)\(suffixes[compress]!)"
        // Under emulation (Tools/vm-test) the host prebuilds the default ones: copied, since tests spoil some.
        let prebuilt = ProcessInfo.processInfo.environment["IMGSANDBOX_TEST_IMAGE_CACHE"].map { "\($0)/\(kind)-\(compress)\(suffixes[compress]!)" }
        if extra.isEmpty, let prebuilt, FileManager.default.fileExists(atPath: prebuilt) {
            try FileManager.default.copyItem(atPath: prebuilt, toPath: path)
        } else {
            try run([Paths.makeTestImage, kind, path, "--compress", compress] + extra)
        }
        if directory == nil { fixture.checksums[path] = try fixture.fingerprint(path) }
        return path
    }

    static func cache(_ fixture: ServeFixture) -> String { fixture.work + "/cache" }

    static func cacheFiles(_ fixture: ServeFixture) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: cache(fixture))) ?? []).sorted()
    }

    /// Every entry of a sandbox: path, type, size, mode (the images are built alike, their times differ).
    static func listing(_ root: String) throws -> [String] {
        try run(["find", root, "-printf", "%P %y %s %m %U %G %l\n"]).output.split(separator: "\n").map(String.init).sorted()
    }

    static func mkdirErrno(_ path: String) -> Int32 { mkdir(path, 0o755) == 0 ? 0 : errno }

    @Test func compressedKindsShowThePlainImagesContent() throws {
        let fixture = try ServeFixture(images: [("plain", "rpi", []), ("both", "rpi", [])])
        defer { fixture.close() }
        let kinds = ["xz-blocks", "xz", "gz", "zst"]
        for kind in kinds { try Self.makeCompressed(fixture, "c-\(kind)", kind) }
        try Self.makeCompressed(fixture, "both", "xz")
        try fixture.start(["--cache-dir", Self.cache(fixture)])
        let names = try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint).sorted()
        #expect(names == ["both", "c-gz", "c-xz", "c-xz-blocks", "c-zst", "plain"])
        #expect(mkdir(fixture.sandbox("plain", "s"), 0o755) == 0)
        let expected = try Self.listing(fixture.sandbox("plain", "s"))
        for kind in kinds {
            let sandbox = fixture.sandbox("c-\(kind)", "s")
            #expect(Self.mkdirErrno(sandbox) == 0, "mkdir of a \(kind) image")
            #expect(try Self.listing(sandbox) == expected, "\(kind) sandbox lists what the plain one does")
            #expect(FileChecks.readFile("\(sandbox)/home/pi/readme.txt") == "Welcome to the test image.\n")
            try FileChecks.writeFile("\(sandbox)/etc/hostname", "changed-\(kind)\n")
            #expect(FileChecks.readFile("\(sandbox)/etc/hostname") == "changed-\(kind)\n")
        }
        // Each cache file is exactly what the tool decompresses, and sparse.
        let tools = ["c-xz-blocks": "xz -dc", "c-xz": "xz -dc", "c-gz": "gzip -dc", "c-zst": "zstd -qdc"]
        for (image, tool) in tools {
            let file = try FileManager.default.contentsOfDirectory(atPath: fixture.images).first { $0.hasPrefix(image + ".img.") }!
            let cached = Self.cacheFiles(fixture).first { $0.hasPrefix(image + ".") && $0.hasSuffix(".img") }
            #expect(cached != nil, "a cache file for \(image)")
            guard let cached else { continue }
            try run(["sh", "-c", "\(tool) '\(fixture.images)/\(file)' | cmp - '\(Self.cache(fixture))/\(cached)'"])
            let info = FileChecks.stat("\(Self.cache(fixture))/\(cached)")!
            #expect(info.st_blocks * 512 < info.st_size / 10, "\(cached) is sparse")
        }
        // NAME.img wins over NAME.img.xz, and the log says so once however often the tree is read.
        for _ in 0..<3 { _ = try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint) }
        #expect(mkdir(fixture.sandbox("both", "s"), 0o755) == 0)
        #expect(!Self.cacheFiles(fixture).contains { $0.hasPrefix("both.") })
        for kind in kinds { #expect(rmdir(fixture.sandbox("c-\(kind)", "s")) == 0) }
        #expect(rmdir(fixture.sandbox("plain", "s")) == 0)
        #expect(rmdir(fixture.sandbox("both", "s")) == 0)
        HostileInputSuite.stopAndDrain(fixture)
        let shadowLines = fixture.log.filter { $0.contains("serving both.img; both.img.xz is ignored") }
        #expect(shadowLines.count == 1, "\(shadowLines)")
    }

    @Test func cacheIsReusedAfterARestartAndInvalidatedByANewFile() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        try Self.makeCompressed(fixture, "r", "xz-blocks")
        let decompressions = { fixture.log.filter { $0.contains("image r: decompressing") }.count }
        for round in 0..<2 {
            try fixture.start(["--cache-dir", Self.cache(fixture)])
            #expect(mkdir(fixture.sandbox("r", "s"), 0o755) == 0)
            #expect(rmdir(fixture.sandbox("r", "s")) == 0)
            HostileInputSuite.stopAndDrain(fixture)
            #expect(decompressions() == 1, "round \(round)")
        }
        #expect(fixture.log.contains { $0.contains("image r: reusing") })
        // Replaced as an admin would (rename over it): decompressed again, the old cache file gone.
        let staged = try Self.makeCompressed(fixture, "r", "xz-blocks", extra: ["--root-dir", Paths.packageRoot + "/Sources/ImageCache"],
                                             directory: fixture.work)
        let path = "\(fixture.images)/r.img.xz"
        fixture.checksums[path] = try fixture.fingerprint(staged)
        #expect(rename(staged, path) == 0)
        try fixture.start(["--cache-dir", Self.cache(fixture)])
        #expect(mkdir(fixture.sandbox("r", "s"), 0o755) == 0)
        #expect(FileManager.default.fileExists(atPath: fixture.sandbox("r", "s") + "/ImageCache.swift"))
        #expect(decompressions() == 2)
        #expect(Self.cacheFiles(fixture).count == 2, "\(Self.cacheFiles(fixture))")
        #expect(rmdir(fixture.sandbox("r", "s")) == 0)
    }

    @Test func cacheMaxEvictsTheUnusedImageNeverOneInUse() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        for name in ["a", "b"] { try Self.makeCompressed(fixture, name, "zst") }
        // Each cache file allocates about 220 KiB (the filesystems' metadata): room for one, not two.
        try fixture.start(["--cache-dir", Self.cache(fixture), "--cache-max", "400K"])
        #expect(mkdir(fixture.sandbox("a", "s"), 0o755) == 0)
        #expect(Self.mkdirErrno(fixture.sandbox("b", "s")) == ENOSPC, "a is in use: nothing to evict")
        #expect(fixture.waitForLog { $0.contains("b/sandboxes/s failed") && $0.contains("--cache-max") })
        #expect(Self.cacheFiles(fixture).filter { $0.hasPrefix("b.") }.isEmpty, "\(Self.cacheFiles(fixture))")
        #expect(rmdir(fixture.sandbox("a", "s")) == 0)
        #expect(mkdir(fixture.sandbox("b", "s"), 0o755) == 0)
        #expect(fixture.waitForLog { $0.contains("evicted") && $0.contains("/a.") })
        #expect(Self.cacheFiles(fixture).filter { $0.hasPrefix("a.") }.isEmpty)
        #expect(rmdir(fixture.sandbox("b", "s")) == 0)
    }

    @Test func badFilesAreRefusedWithNoResidue() throws {
        let fixture = try ServeFixture(images: [("good", "rpi", [])])
        defer { fixture.close() }
        // Each bad file is made, then spoilt: (name, how it is made, how it is spoilt, what the log says).
        let blocks = try Self.makeCompressed(fixture, "bad-flip-xz", "xz-blocks")
        let robot = try run(["xz", "--robot", "-lvv", blocks]).output.split(separator: "\n")
            .filter { $0.hasPrefix("block\t") }.map { $0.split(separator: "\t") }
        // Block 3: its compressed offset (field 4) + header size (field 11) is where its data starts.
        let block = robot[2]
        try flipByte(blocks, at: Int(block[4])! + Int(block[11])! + 2)
        #expect(try run(["xz", "-t", blocks], allowFailure: true).status != 0, "xz itself refuses the flipped file")
        for (name, kind) in [("bad-cut-xz", "xz"), ("bad-cut-gz", "gz"), ("bad-cut-zst", "zst")] {
            let path = try Self.makeCompressed(fixture, name, kind)
            let size = FileChecks.stat(path)!.st_size
            #expect(truncate(path, size * 2 / 3) == 0)
        }
        // A flip in deflate data that copies zeros can still decode to the same bytes: take the first
        // offset from the middle down that gzip itself refuses.
        let gz = try Self.makeCompressed(fixture, "bad-flip-gz", "gz")
        var offset = Int(FileChecks.stat(gz)!.st_size / 2)
        while offset > 64 {
            try flipByte(gz, at: offset)
            if try run(["gzip", "-t", gz], allowFailure: true).status != 0 { break }
            try flipByte(gz, at: offset)
            offset -= 997
        }
        #expect(offset > 64, "a flip gzip refuses")
        try Self.makeCompressed(fixture, "bad-index-huge", "xz-blocks", extra: ["--forge-xz-index", "uncompressed"])
        try Self.makeCompressed(fixture, "bad-index-beyond", "xz-blocks", extra: ["--forge-xz-index", "compressed"])
        for path in try FileManager.default.contentsOfDirectory(atPath: fixture.images) {
            fixture.checksums["\(fixture.images)/\(path)"] = try fixture.fingerprint("\(fixture.images)/\(path)")
        }
        try fixture.start(["--cache-dir", Self.cache(fixture)])
        let bad = ["bad-flip-xz", "bad-cut-xz", "bad-cut-gz", "bad-cut-zst", "bad-flip-gz", "bad-index-huge", "bad-index-beyond"]
        for image in bad {
            #expect(Self.mkdirErrno(fixture.sandbox(image, "s")) == EIO, "\(image)")
            #expect(fixture.waitForLog { $0.contains("\(image)/sandboxes/s failed") }, "\(image)")
            #expect(Self.cacheFiles(fixture).isEmpty, "\(image) left \(Self.cacheFiles(fixture))")
            #expect(HostileInputSuite.residue(fixture).isEmpty, "\(image): \(HostileInputSuite.residue(fixture))")
            // Asked again: the same answer (remembered: the file is unchanged).
            #expect(Self.mkdirErrno(fixture.sandbox(image, "s")) == EIO)
        }
        #expect(mkdir(fixture.sandbox("good", "s"), 0o755) == 0)
        #expect(rmdir(fixture.sandbox("good", "s")) == 0)
        HostileInputSuite.stopAndDrain(fixture)
        for image in bad {
            let said = fixture.log.filter { $0.contains("\(image)/sandboxes/s failed") }
            #expect(said.count == 2, "one line per refused mkdir: \(said)")
            #expect(said.allSatisfy { $0.contains("offset") || $0.contains("refused") }, "\(said)")
        }
        #expect(fixture.log.contains { $0.contains("bad-index-huge") && $0.contains("the index claims") })
        // The forged indexes and the cut xz file (no footer) are refused before any block is decoded.
        #expect(fixture.log.filter { $0.contains("decompressing") }.count == 4)
    }

    @Test func fullDiskIsAClearErrorWithNoPartialFile() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        // An image with 2 MiB of data that does not compress, on a 1 MiB cache filesystem.
        let root = fixture.work + "/root"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try run(["sh", "-c", "head -c 2097152 /dev/urandom > '\(root)/noise'"])
        try Self.makeCompressed(fixture, "big", "gz", extra: ["--root-dir", root])
        let cache = Self.cache(fixture)
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        try run(["mount", "-t", "tmpfs", "-o", "size=1M,mode=0700", "imgsandbox-test", cache])
        defer { _ = try? run(["umount", cache]) }
        try fixture.start(["--cache-dir", cache])
        #expect(Self.mkdirErrno(fixture.sandbox("big", "s")) == ENOSPC)
        #expect(fixture.waitForLog { $0.contains("big/sandboxes/s failed") && $0.contains("the disk is full") })
        #expect(Self.cacheFiles(fixture).isEmpty, "\(Self.cacheFiles(fixture))")
        #expect(HostileInputSuite.residue(fixture).filter { $0 != "mount \(cache)" }.isEmpty)
    }

    @Test func statusShowsProgressAndASecondMkdirWaitsForTheSameWork() throws {
        let fixture = try ServeFixture(images: [("plain", "rpi", [])])
        defer { fixture.close() }
        try Self.makeCompressed(fixture, "r", "xz-blocks")
        let gate = fixture.work + "/gate"
        #expect(mkfifo(gate, 0o600) == 0)
        try fixture.start(["--cache-dir", Self.cache(fixture)], environment: ["IMGSANDBOX_TEST_PREPARE_GATE": gate])
        // Debug builds only: without the seam the FIFO below would never be opened by the daemon.
        try #require(fixture.waitForLog { $0.contains("test seam IMGSANDBOX_TEST_PREPARE_GATE") }, "a debug build of imgsandbox")
        let first = try Self.background(["mkdir", fixture.sandbox("r", "a")])
        // Opening the FIFO returns once the decompression is held at its gate (after its first output).
        let writer = open(gate, O_WRONLY)
        #expect(writer >= 0)
        var released = false
        // Released also when an expectation throws: else the held decompression would keep the daemon up.
        defer { if !released { close(writer) } }
        let second = try Self.background(["mkdir", fixture.sandbox("r", "b")])
        // Other images are not held up.
        #expect(mkdir(fixture.sandbox("plain", "s"), 0o755) == 0)
        let output = try run([Paths.binary, "status", "--json", fixture.mountpoint]).output
        let document = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
        let preparing = document?["preparing"] as? [[String: Any]] ?? []
        #expect(preparing.count == 1)
        if let row = preparing.first {
            #expect(row["image"] as? String == "r")
            #expect(row["bytes_total"] as? Int == 256 << 20)
            #expect((row["bytes_done"] as? Int ?? 0) > 0)
            #expect((row["compressed_bytes_done"] as? Int ?? 0) > 0)
            #expect(row["compressed_bytes_total"] as? Int == Int(FileChecks.stat("\(fixture.images)/r.img.xz")!.st_size))
            #expect(row["mib_per_second"] != nil)
        }
        let table = try run([Paths.binary, "status", fixture.mountpoint]).output
        #expect(table.contains("preparing r (xz):"))
        // The kernel serialises mkdirs in one directory (the parent's lock): the second waits behind the
        // first, then finds the image ready. (ImageCacheTests shares one job between concurrent callers.)
        #expect(second.isRunning)
        close(writer)
        released = true
        first.waitUntilExit()
        second.waitUntilExit()
        #expect(first.terminationStatus == 0 && second.terminationStatus == 0)
        #expect(fixture.log.filter { $0.contains("image r: decompressing") }.count == 1)
        #expect(fixture.log.contains { $0.contains("image r: ready in") })
        for path in [fixture.sandbox("r", "a"), fixture.sandbox("r", "b"), fixture.sandbox("plain", "s")] { #expect(rmdir(path) == 0) }
    }

    static func background(_ argv: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = argv
        try process.run()
        return process
    }
}
