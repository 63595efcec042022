import Foundation
import Glibc
import TestSupport
import Testing

/// Broken and hostile images, hostile sandbox names, and images that change under live sandboxes:
/// each refusal is one errno and one log line, the daemon keeps serving, nothing is left behind.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct HostileInputSuite {
    /// Tools/make-test-image's hostile kinds and the errno mkdir of a sandbox of each must give:
    /// EINVAL for malformed tables, EMEDIUMTYPE for well-formed images holding no Linux filesystem.
    static let corpus: [(kind: String, errno: Int32)] = [
        ("empty", EINVAL), ("odd-size", EINVAL), ("random", EMEDIUMTYPE), ("mbr-beyond-end", EINVAL),
        ("mbr-overlap", EINVAL), ("ebr-loop", EINVAL), ("gpt-bad-crc-both", EINVAL),
        ("gpt-huge-count", EINVAL), ("gpt-100k-entries", EINVAL), ("unknown-fs", EMEDIUMTYPE),
    ]

    /// Log lines at info level or above that mention this sandbox (the serve log is the daemon's stderr).
    static func lines(_ fixture: ServeFixture, mentioning image: String, _ sandbox: String) -> [String] {
        fixture.log.filter { $0.contains("\(image)/sandboxes/\(sandbox)") || $0.contains("\(image)/\(sandbox)") }
    }

    /// Stops the daemon and waits for its last log line, so every line it wrote has been read.
    static func stopAndDrain(_ fixture: ServeFixture) {
        #expect(fixture.stop() == 0)
        #expect(fixture.waitForLog { $0.contains("tearing every sandbox down") })
    }

    /// Residue of the running daemon other than its own FUSE mount.
    static func residue(_ fixture: ServeFixture) -> [String] {
        Residue.find(work: fixture.work, instance: fixture.pid).filter { $0 != "mount \(fixture.mountpoint)" }
    }

    @Test func brokenImagesAreRefusedWithOneErrnoAndOneLogLine() throws {
        let fixture = try ServeFixture(images: Self.corpus.map { ("h-\($0.kind)", $0.kind, []) } + [("good", "rpi", [])])
        defer { fixture.close() }
        try fixture.start()
        for (kind, expected) in Self.corpus {
            let image = "h-\(kind)"
            let path = fixture.sandbox(image, "s")
            let result = mkdir(path, 0o755)
            let error = errno
            #expect(result == -1 && error == expected,
                    "mkdir of a sandbox of \(kind): \(result) \(String(cString: strerror(error))), wanted \(String(cString: strerror(expected)))")
            #expect(fixture.waitForLog { $0.contains("\(image)/sandboxes/s") }, "a log line for \(kind)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(fixture.mountpoint)/\(image)/sandboxes").isEmpty)
            // Asking twice gives the same answer: nothing half-made stays behind to change it.
            #expect(mkdir(path, 0o755) == -1 && errno == expected)
        }
        // The daemon still serves a good image after all of that.
        let good = fixture.sandbox("good", "s")
        #expect(mkdir(good, 0o755) == 0, "mkdir after the corpus: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(good)/etc/hostname") == "raspberrypi\n")
        #expect(rmdir(good) == 0)
        Self.stopAndDrain(fixture)
        for (kind, _) in Self.corpus {
            let said = Self.lines(fixture, mentioning: "h-\(kind)", "s")
            #expect(said.count == 2, "one log line per refused mkdir of \(kind) (two were made): \(said)")
        }
    }

    /// A GPT whose primary header is corrupt but whose backup is good is read from the backup.
    @Test func gptWithABadPrimaryHeaderUsesTheBackup() throws {
        let fixture = try ServeFixture(images: [("gpt", "gpt-bad-primary", [])])
        defer { fixture.close() }
        try fixture.start()
        let path = fixture.sandbox("gpt", "s")
        #expect(mkdir(path, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(path)/etc/hostname") == "raspberrypi\n")
        try FileChecks.writeFile("\(path)/written", "ok")
        #expect(FileChecks.readFile("\(path)/written") == "ok")
        #expect(rmdir(path) == 0)
        #expect(fixture.stop() == 0)
    }

    /// An ext4 root with 1 KiB blocks works on both engines (on dm through a 512-byte-sector loop device
    /// over the zram COW store, since zram's 4 KiB sectors cannot carry it).
    @Test func ext4WithOneKiBBlocksWorks() throws {
        let fixture = try ServeFixture(images: [("small", "ext4-1k", [])])
        defer { fixture.close() }
        try fixture.start()
        let path = fixture.sandbox("small", "s")
        #expect(mkdir(path, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(path)/etc/hostname") == "raspberrypi\n")
        try FileChecks.writeBig("\(path)/big.bin", mebibytes: 20, seed: 3)
        #expect(rmdir(path) == 0)
        #expect(FileChecks.stat(path) == nil)
        #expect(fixture.stop() == 0)
    }

    /// Out of loop or zram devices (simulated with Tools/fault-inject/exhaust-devices.c preloaded into the
    /// daemon, so other users of the machine keep theirs): ENOSPC, one log line, nothing half-made; once
    /// devices are back the same mkdir works.
    @Test func runningOutOfLoopOrZramDevices() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        let faults = try FaultInjector(in: fixture.work)
        try fixture.start(environment: faults.environment)
        // The loop device is taken once per image (attach), the zram device once per sandbox; with a live
        // sandbox holding the image, only zram is asked for.
        for (round, device) in ["loop", "zram"].enumerated() {
            try faults.set(device)
            let name = "out-of-\(device)"
            let result = mkdir(fixture.sandbox("pi", name), 0o755)
            let error = errno
            #expect(result == -1 && error == ENOSPC, "\(device): \(result) \(errnoName(error))")
            #expect(fixture.waitForLog { $0.contains("pi/sandboxes/\(name)") && $0.contains(device) },
                    "a log line names the step that ran out of \(device) devices")
            if round == 0 { #expect(Self.residue(fixture).isEmpty) }
            try faults.set("")
            #expect(mkdir(fixture.sandbox("pi", name), 0o755) == 0, "after \(device) devices are back: \(errnoName(errno))")
            if round == 1 { #expect(rmdir(fixture.sandbox("pi", name)) == 0) }
        }
        #expect(rmdir(fixture.sandbox("pi", "out-of-loop")) == 0)
        Self.stopAndDrain(fixture)
        for device in ["loop", "zram"] {
            let said = fixture.log.filter { $0.contains("pi/sandboxes/out-of-\(device) failed") }
            #expect(said.count == 1, "one log line when out of \(device) devices: \(said)")
        }
    }

    static let validNames = ["a", "Z9", "x..y", "a-b_c.d+e@f", String(repeating: "n", count: 64)]
    /// Names the manager refuses with EINVAL (the kernel passes them to the daemon).
    static let invalidNames: [(label: String, bytes: [UInt8])] = [
        ("65 bytes", Array(String(repeating: "n", count: 65).utf8)),
        ("leading dot", Array(".hidden".utf8)), ("dot dot prefix", Array("..x".utf8)),
        ("leading dash", Array("-rf".utf8)), ("space", Array("two words".utf8)),
        ("tab", Array("a\tb".utf8)), ("newline", Array("a\nb".utf8)), ("control 0x01", [0x61, 0x01, 0x62]),
        ("escape", [0x61, 0x1b, 0x5b, 0x32, 0x4a]), ("DEL", [0x61, 0x7f]),
        ("non-ASCII", Array("café".utf8)), ("emoji", Array("box📦".utf8)),
        ("invalid UTF-8", [0x61, 0xff, 0xfe]), ("backslash", Array("a\\b".utf8)),
        ("colon", Array("a:b".utf8)), ("glob", Array("a*".utf8)),
    ]

    static func mkdirRaw(_ directory: String, _ name: [UInt8]) -> (Int32, Int32) {
        let path = Array(directory.utf8) + [UInt8(ascii: "/")] + name + [0]
        let result = path.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { mkdir($0.baseAddress!, 0o755) }
        }
        return (result, result == 0 ? 0 : errno)
    }

    @Test func sandboxNames() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandboxes = "\(fixture.mountpoint)/pi/sandboxes"
        for (label, bytes) in Self.invalidNames {
            let (result, error) = Self.mkdirRaw(sandboxes, bytes)
            #expect(result == -1 && error == EINVAL, "\(label): \(result) \(String(cString: strerror(error)))")
        }
        // Past NAME_MAX: FUSE passes names up to 1024 bytes to the daemon, which refuses them like any
        // other long name; past that the kernel says ENAMETOOLONG itself.
        let (result, error) = Self.mkdirRaw(sandboxes, Array(String(repeating: "n", count: 256).utf8))
        #expect(result == -1 && error == EINVAL, "256 bytes: \(errnoName(error))")
        let (huge, hugeError) = Self.mkdirRaw(sandboxes, Array(String(repeating: "n", count: 2000).utf8))
        #expect(huge == -1 && [EINVAL, ENAMETOOLONG].contains(hugeError), "2000 bytes: \(errnoName(hugeError))")
        // "." and "..": the kernel answers itself (they exist); nothing is made either way.
        for dots in [".", ".."] {
            #expect(mkdir("\(sandboxes)/\(dots)", 0o755) == -1 && errno == EEXIST, "mkdir \(dots)")
        }
        #expect(rmdir("\(sandboxes)/.") == -1 && errno == EINVAL)
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandboxes).isEmpty)

        for name in Self.validNames {
            #expect(mkdir("\(sandboxes)/\(name)", 0o755) == 0, "\(name): \(String(cString: strerror(errno)))")
            #expect(FileChecks.readFile("\(sandboxes)/\(name)/etc/hostname") == "raspberrypi\n")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandboxes).sorted() == Self.validNames.sorted())
        #expect(try fixture.status().count == Self.validNames.count)
        for name in Self.validNames { #expect(rmdir("\(sandboxes)/\(name)") == 0, "rmdir \(name)") }
        Self.stopAndDrain(fixture)
        let refusals = fixture.log.filter { $0.contains("mkdir pi/sandboxes/") }
        let daemonRefusals = Self.invalidNames.count + 1 + (hugeError == EINVAL ? 1 : 0)
        #expect(refusals.count == daemonRefusals, "one log line per refused name: \(refusals)")
        // A name cannot forge log lines: control characters are escaped, so every line is the daemon's own.
        let forged = fixture.log.filter { !$0.hasPrefix("20") || $0.contains("\u{1b}") }
        #expect(forged.isEmpty, "log lines not started by the logger, or raw escapes: \(forged)")
    }

    /// Deleting an image, or renaming another file over it, leaves its live sandboxes working on the old
    /// content; once they are gone, new sandboxes see what the directory holds now.
    @Test func imageDeletedOrReplacedWhileSandboxesLive() throws {
        let fixture = try ServeFixture(images: [("gone", "whole-ext4", []), ("swapped", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let a = fixture.sandbox("gone", "a"), b = fixture.sandbox("swapped", "b")
        #expect(mkdir(a, 0o755) == 0)
        #expect(mkdir(b, 0o755) == 0)
        try FileChecks.writeFile("\(a)/before", "1")

        try fixture.removeImage("gone")
        let newRoot = fixture.work + "/new-root"
        try FileManager.default.createDirectory(atPath: newRoot + "/etc", withIntermediateDirectories: true)
        try "replaced\n".write(toFile: newRoot + "/etc/hostname", atomically: false, encoding: .utf8)
        try fixture.replaceImage("swapped", kind: "whole-ext4", extra: ["--root-dir", newRoot])

        // Live sandboxes keep working, on the image they were made from.
        for sandbox in [a, b] {
            #expect(FileChecks.readFile("\(sandbox)/etc/hostname") == "raspberrypi\n")
            try FileChecks.writeBig("\(sandbox)/after.bin", mebibytes: 8, seed: 9)
        }
        #expect(FileChecks.readFile("\(a)/before") == "1")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint).sorted() == ["gone", "swapped"])

        #expect(rmdir(a) == 0)
        #expect(rmdir(b) == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint) == ["swapped"])
        #expect(mkdir(fixture.sandbox("gone", "c"), 0o755) == -1 && errno == ENOENT)
        let fresh = fixture.sandbox("swapped", "fresh")
        #expect(mkdir(fresh, 0o755) == 0)
        #expect(FileChecks.readFile("\(fresh)/etc/hostname") == "replaced\n")
        #expect(rmdir(fresh) == 0)
        #expect(fixture.stop() == 0)
    }
}
