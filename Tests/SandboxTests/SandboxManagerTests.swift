import Foundation
import Glibc
import Logging
import Sandbox
import TestSupport
import Testing

/// A temp folder with images (real ext4 filesystems made by mkfs.ext4, no root needed) and a run dir.
final class ManagerFixture {
    let root: String
    let engine = FakeEngine()
    let manager: SandboxManager
    let names: InstanceNames

    init(images: [String] = ["alpha", "beta"]) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("imgsandbox-mgr-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/images", withIntermediateDirectories: true)
        for image in images { try Self.makeExt4Image(root + "/images/\(image).img") }
        names = InstanceNames(pid: 1, runRoot: root)
        manager = try SandboxManager(imagesDirectory: root + "/images", names: names, engine: engine,
                                     settings: SandboxSettings(), logger: Logger(label: "test"))
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    static func makeExt4Image(_ path: String) throws {
        let make = Subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", path, "4M"])
        #expect(make.status == 0, "\(make.output)")
    }

    /// Mount points the manager left under its run directory.
    var leftoverMountDirectories: [String] {
        let base = names.hiddenMounts
        guard let images = try? FileManager.default.contentsOfDirectory(atPath: base) else { return [] }
        return images.flatMap { image in
            ((try? FileManager.default.contentsOfDirectory(atPath: base + "/" + image)) ?? []).map { "\(image)/\($0)" }
        }
    }
}

func errnoOf(_ body: () throws -> Void) -> Int32? {
    do { try body(); return nil } catch { return (error as? any ErrnoCarrying)?.errno ?? -1 }
}

@Suite struct SandboxManagerTests {
    @Test func createListDestroyShareTheImage() throws {
        let fixture = try ManagerFixture()
        let manager = fixture.manager
        #expect(manager.imageNames() == ["alpha", "beta"])
        #expect(manager.sandboxNames(image: "alpha") == [])
        #expect(manager.sandboxNames(image: "gamma") == nil)
        let one = try manager.createSandbox(image: "alpha", name: "one")
        let two = try manager.createSandbox(image: "alpha", name: "two")
        #expect(one.serial != two.serial)
        #expect(one.mountPath != two.mountPath)
        #expect(FileManager.default.fileExists(atPath: one.mountPath))
        #expect(manager.sandboxNames(image: "alpha") == ["one", "two"])
        #expect(fixture.engine.imageAttachCount == 1)
        #expect(manager.status().map(\.sandbox) == ["one", "two"])
        try manager.destroySandbox(image: "alpha", name: "one")
        #expect(fixture.engine.liveObjects.contains("base:alpha"))
        try manager.destroySandbox(image: "alpha", name: "two")
        #expect(fixture.engine.liveObjects.isEmpty)
        #expect(fixture.leftoverMountDirectories.isEmpty)
        #expect(manager.sandboxNames(image: "alpha") == [])
    }

    @Test(arguments: FakeEngine.imageSteps + FakeEngine.sandboxSteps)
    func failureAtEveryStepLeavesNothingBehind(step: String) throws {
        let fixture = try ManagerFixture()
        let manager = fixture.manager
        fixture.engine.failCreate(at: step)
        #expect(errnoOf { _ = try manager.createSandbox(image: "alpha", name: "x") } == ENOSPC)
        #expect(fixture.engine.liveObjects.isEmpty)
        #expect(fixture.leftoverMountDirectories.isEmpty)
        #expect(manager.sandboxNames(image: "alpha") == [])
        fixture.engine.failCreate(at: nil)
        _ = try manager.createSandbox(image: "alpha", name: "x")
        try manager.destroySandbox(image: "alpha", name: "x")
        #expect(fixture.engine.liveObjects.isEmpty)
    }

    @Test func sandboxFailureKeepsTheImageOfOtherSandboxes() throws {
        let fixture = try ManagerFixture()
        let manager = fixture.manager
        _ = try manager.createSandbox(image: "alpha", name: "keep")
        fixture.engine.failCreate(at: "snapshot")
        #expect(errnoOf { _ = try manager.createSandbox(image: "alpha", name: "lost") } == ENOSPC)
        #expect(fixture.engine.liveObjects == ["loop:alpha", "base:alpha", "zram:alpha/keep", "snapshot:alpha/keep",
                                               "mount:alpha/keep", "grow:alpha/keep"])
        fixture.engine.failCreate(at: nil)
        try manager.destroySandbox(image: "alpha", name: "keep")
        #expect(fixture.engine.liveObjects.isEmpty)
    }

    @Test func destroyThatFailsBeforeUndoingAnythingKeepsTheSandboxUsable() throws {
        let fixture = try ManagerFixture()
        let manager = fixture.manager
        let ref = try manager.createSandbox(image: "beta", name: "s")
        fixture.engine.failUndo(of: FakeEngine.sandboxSteps.last)
        #expect(errnoOf { try manager.destroySandbox(image: "beta", name: "s") } == ENOSPC)
        #expect(manager.sandbox(image: "beta", name: "s") == ref)
        #expect(manager.status().map(\.usage.state) == [.active])
        fixture.engine.failUndo(of: nil)
        try manager.destroySandbox(image: "beta", name: "s")
        #expect(fixture.engine.liveObjects.isEmpty)
    }

    /// Defect: a teardown that stopped part-way (the unmount done, a later step failed) put the sandbox back
    /// as ready, and the FUSE layer served its mountPath, a bare directory by then.
    @Test func destroyThatStopsPartWayLeavesABrokenSandboxThatRmdirFinishes() throws {
        let fixture = try ManagerFixture()
        let manager = fixture.manager
        let ref = try manager.createSandbox(image: "beta", name: "s")
        fixture.engine.failUndo(of: "snapshot")
        #expect(errnoOf { try manager.destroySandbox(image: "beta", name: "s") } == ENOSPC)
        let broken = try #require(manager.sandbox(image: "beta", name: "s"))
        #expect(broken.broken && broken.serial == ref.serial)
        #expect(manager.sandboxNames(image: "beta") == ["s"])
        #expect(manager.status().map(\.usage.state) == [.broken])
        // What the snapshot needs is still there; what stood on it is gone.
        #expect(fixture.engine.liveObjects.contains("snapshot:beta/s") && !fixture.engine.liveObjects.contains("mount:beta/s"))
        // Still failing: still broken.
        #expect(errnoOf { try manager.destroySandbox(image: "beta", name: "s") } == ENOSPC)
        #expect(manager.sandbox(image: "beta", name: "s")?.broken == true)
        fixture.engine.failUndo(of: nil)
        try manager.destroySandbox(image: "beta", name: "s")
        #expect(fixture.engine.liveObjects.isEmpty)
        #expect(manager.sandbox(image: "beta", name: "s") == nil)
        #expect(fixture.leftoverMountDirectories.isEmpty)
    }

    @Test func userErrorsCarryTheirErrno() throws {
        let fixture = try ManagerFixture()
        let manager = fixture.manager
        _ = try manager.createSandbox(image: "alpha", name: "dup")
        #expect(errnoOf { _ = try manager.createSandbox(image: "alpha", name: "dup") } == EEXIST)
        #expect(errnoOf { _ = try manager.createSandbox(image: "alpha", name: "..") } == EINVAL)
        #expect(errnoOf { _ = try manager.createSandbox(image: "alpha", name: "a b") } == EINVAL)
        #expect(errnoOf { _ = try manager.createSandbox(image: "nope", name: "x") } == ENOENT)
        #expect(errnoOf { try manager.destroySandbox(image: "alpha", name: "nope") } == ENOENT)
        #expect(manager.shutdown().isEmpty)
        #expect(errnoOf { _ = try manager.createSandbox(image: "alpha", name: "late") } == ESHUTDOWN)
        #expect(fixture.engine.liveObjects.isEmpty)
    }

    @Test func imageWithoutLinuxFilesystemIsRefused() throws {
        let fixture = try ManagerFixture(images: [])
        let path = fixture.root + "/images/zeros.img"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 1 << 20)))
        #expect(errnoOf { _ = try fixture.manager.createSandbox(image: "zeros", name: "x") } == EMEDIUMTYPE)
        #expect(fixture.engine.imageAttachCount == 0)
    }

    @Test func concurrentCreatesAndDestroys() async throws {
        let fixture = try ManagerFixture()
        let manager = fixture.manager
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<16 {
                group.addTask { _ = try? manager.createSandbox(image: i % 2 == 0 ? "alpha" : "beta", name: "s\(i / 2)") }
            }
        }
        #expect(manager.sandboxNames(image: "alpha")?.count == 8)
        #expect(manager.sandboxNames(image: "beta")?.count == 8)
        #expect(fixture.engine.imageAttachCount == 2)
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<16 {
                group.addTask { try? manager.destroySandbox(image: i % 2 == 0 ? "alpha" : "beta", name: "s\(i / 2)") }
            }
        }
        #expect(fixture.engine.liveObjects.isEmpty)
        #expect(fixture.leftoverMountDirectories.isEmpty)
    }
}
