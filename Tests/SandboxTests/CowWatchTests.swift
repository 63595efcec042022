import FATFS
import Foundation
import Glibc
import Logging
import Synchronization
import TestSupport
import Testing
@testable import Sandbox

/// An engine whose usage the test sets, counting grow calls.
final class ScriptedUsageEngine: SandboxEngine {
    let kind = "scripted"
    final class Attachment: EngineAttachment {
        let teardown = Teardown()
    }
    struct State {
        var usage = SandboxUsage(cowUsedBytes: 0, cowTotalBytes: 100 << 20)
        var growCalls = 0
        var growTo: UInt64?
    }
    let state = Mutex(State())

    func attachImage(_ request: ImageRequest) throws -> any EngineAttachment { Attachment() }
    func createSandbox(_ request: SandboxRequest, on image: any EngineAttachment) throws -> any EngineAttachment { Attachment() }
    func usage(of sandbox: any EngineAttachment) -> SandboxUsage { state.withLock { $0.usage } }
    func growCowStore(of sandbox: any EngineAttachment, usage: SandboxUsage) throws -> UInt64? {
        state.withLock { state in
            state.growCalls += 1
            guard let size = state.growTo else { return nil }
            state.usage.cowTotalBytes = size
            state.growTo = nil
            return size
        }
    }
}

/// Collects log lines in memory.
// @unchecked: LogHandler needs settable logLevel/metadata, which no test changes once a logger has the
// handler; the lines themselves are in a Mutex.
final class CollectingLogHandler: LogHandler, @unchecked Sendable {
    static let lines = Mutex<[String]>([])
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    let label: String
    init(label: String) { self.label = label }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let text = "\(event.level) \(label) \(event.message)"
        Self.lines.withLock { $0.append(text) }
    }
}

@Suite struct CowWatchTests {
    @Test func watcherPassWarnsOnceAt80And95GrowsAndReportsOverflow() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cowwatch-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/images", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try ManagerFixture.makeExt4Image(root + "/images/pi.img")
        let engine = ScriptedUsageEngine()
        let label = "cowwatch-\(UUID().uuidString.prefix(8))"
        let logger = Logger(label: label) { CollectingLogHandler(label: $0) }
        let names = InstanceNames(pid: 1, runRoot: root)
        let manager = try SandboxManager(imagesDirectory: root + "/images", names: names, engine: engine,
                                         settings: SandboxSettings(), logger: logger)
        _ = try manager.createSandbox(image: "pi", name: "s")
        func lines() -> [String] {
            CollectingLogHandler.lines.withLock { $0.filter { $0.contains(label) && $0.contains("COW") } }
        }
        func setUsed(_ mebibytes: UInt64, state: SandboxState = .active) {
            engine.state.withLock {
                $0.usage.cowUsedBytes = mebibytes << 20
                $0.usage.state = state
            }
        }

        manager.checkCowStores()
        #expect(lines().isEmpty)
        setUsed(85)
        manager.checkCowStores()
        manager.checkCowStores()
        #expect(lines().filter { $0.hasPrefix("warning") && $0.contains("pi/s uses 80%") }.count == 1)
        setUsed(97)
        manager.checkCowStores()
        #expect(lines().filter { $0.hasPrefix("warning") && $0.contains("pi/s uses 95%") }.count == 1)
        // A grown store brings the share down again; the log says so.
        engine.state.withLock { $0.growTo = 400 << 20 }
        manager.checkCowStores()
        #expect(lines().contains { $0.hasPrefix("info") && $0.contains("grew the COW store of pi/s to 400M") })
        setUsed(400, state: .overflowed)
        manager.checkCowStores()
        manager.checkCowStores()
        #expect(lines().filter { $0.hasPrefix("error") && $0.contains("pi/s overflowed its COW store") }.count == 1)
        #expect(engine.state.withLock { $0.growCalls } == 7)
        #expect(manager.status().first?.usage.state == .overflowed)

        #expect(manager.shutdown().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: names.runDirectory), "a clean shutdown leaves no run directory")
    }
}

/// An engine whose sandboxes are plain directories holding an fstab that mounts partition 1 (FAT) at
/// /boot/firmware, and whose block stores are unlinked files: the manager then serves the image's real FAT
/// partition from FATFS over a block COW, which the watcher must watch like the root's store.
final class FstabEngine: SandboxEngine {
    let kind = "fstab"
    final class Attachment: EngineAttachment {
        let teardown = Teardown()
    }
    let scratch: String
    init(scratch: String) { self.scratch = scratch }

    func attachImage(_ request: ImageRequest) throws -> any EngineAttachment { Attachment() }
    func createSandbox(_ request: SandboxRequest, on image: any EngineAttachment) throws -> any EngineAttachment {
        try FileManager.default.createDirectory(atPath: request.mountPath + "/etc", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: request.mountPath + "/boot/firmware", withIntermediateDirectories: true)
        try "PARTUUID=6c586e13-01 /boot/firmware vfat defaults 0 2\n"
            .write(toFile: request.mountPath + "/etc/fstab", atomically: false, encoding: .utf8)
        let attachment = Attachment()
        let path = request.mountPath
        attachment.teardown.push("empty \(path)") {
            for entry in ["etc", "boot"] { try FileManager.default.removeItem(atPath: "\(path)/\(entry)") }
        }
        return attachment
    }
    func usage(of sandbox: any EngineAttachment) -> SandboxUsage { SandboxUsage(cowUsedBytes: 0, cowTotalBytes: 100 << 20) }
    func makeBlockStore(bytes: UInt64, teardown: Teardown) throws -> Int32 {
        let path = "\(scratch)/store-\(UUID().uuidString)"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0, unlink(path) == 0, ftruncate(fd, off_t(bytes)) == 0 else { throw FakeEngine.InjectedFailure(step: "store") }
        teardown.push("close store") { close(fd) }
        return fd
    }
}

@Suite struct PartitionCowWatchTests {
    /// A FAT partition's block COW: grown a --cow-size step at a time up to --cow-max, warned about at 80 % and
    /// 95 % of that (once each), ENOSPC past it, shown by status with the limit in force.
    @Test func fatPartitionStoreIsGrownAndWarnedAbout() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("partwatch-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/images", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let tool = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tools/make-test-image").path
        let make = Subprocess.run([tool, "rpi", root + "/images/pi.img"])
        try #require(make.status == 0, "make-test-image rpi: \(make.output)")

        let label = "partwatch-\(UUID().uuidString.prefix(8))"
        let logger = Logger(label: label) { CollectingLogHandler(label: $0) }
        var settings = SandboxSettings()
        settings.cowSize = 1 << 20
        settings.cowMax = 2 << 20
        let manager = try SandboxManager(imagesDirectory: root + "/images", names: InstanceNames(pid: 1, runRoot: root),
                                         engine: FstabEngine(scratch: root), settings: settings, logger: logger)
        defer { #expect(manager.shutdown().isEmpty) }
        let ref = try manager.createSandbox(image: "pi", name: "s")
        guard let part = ref.partitions.first, case .fat(let volume, let cow?) = part.content else {
            Issue.record("no FAT partition in \(ref.partitions)")
            return
        }
        #expect(part.mount.mountPoint == "/boot/firmware")
        func lines(_ level: String) -> [String] {
            CollectingLogHandler.lines.withLock { $0.filter { $0.contains(label) && $0.hasPrefix(level) && $0.contains("pi/s partition 1 (/boot/firmware)") } }
        }
        var written = 0
        func fill(_ file: FATAttr, to bytes: Int) throws {
            let chunk = [UInt8](repeating: 0x5a, count: 64 << 10)
            while written < bytes {
                written += try volume.write(file.id, at: UInt64(written), chunk)
            }
        }
        manager.checkCowStores()
        #expect(cow.limitBytes == 1 << 20, "nothing written: not grown")
        let file = try volume.create(parent: FATVolume.rootID, name: "fill.bin")
        try fill(file, to: 256 << 10)
        manager.checkCowStores()
        #expect(cow.limitBytes == 2 << 20)
        #expect(lines("info").filter { $0.contains("grew the COW store") && $0.contains("to 2M (max 2M)") }.count == 1)
        #expect(manager.status().first?.partitions.first?.cowTotalBytes == 2 << 20)
        #expect(lines("warning").isEmpty)

        try fill(file, to: 1700 << 10)
        manager.checkCowStores()
        manager.checkCowStores()
        #expect(lines("warning").filter { $0.contains("uses 80% of its COW budget") }.count == 1)
        // Past the limit: ENOSPC, the volume still answers, and the 95 % warning comes once.
        #expect(throws: FATError.self) { try fill(file, to: 4 << 20) }
        manager.checkCowStores()
        manager.checkCowStores()
        #expect(lines("warning").filter { $0.contains("uses 95% of its COW budget") }.count == 1)
        #expect(cow.bytesUsed <= 2 << 20)
        #expect(try volume.getattr(file.id).size >= 1700 << 10)
        #expect(lines("error").isEmpty)
    }
}
