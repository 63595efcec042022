import Foundation
import Glibc
import Logging
import Synchronization
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
