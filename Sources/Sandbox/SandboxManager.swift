import DiskImage
import Glibc
import Logging
import Synchronization

/// One row of `imgsandbox status`.
public struct SandboxStatus: Sendable, Codable, Equatable {
    public let image: String
    public let sandbox: String
    public let engine: String
    public let mountPath: String
    public let usage: SandboxUsage
}

/// Owns every image attachment and sandbox of one serve process: naming, lifecycle, concurrency.
///
/// Locking: `registry` (short sections, never held across kernel work) guards the names; each image's
/// `ImageSlot.lock` serialises the slow engine work of that image (attach, create, destroy, detach), so
/// sandboxes of different images are made in parallel. Order: slot lock, then registry; never the reverse.
public final class SandboxManager: SandboxProvider {
    public let engine: any SandboxEngine
    public let settings: SandboxSettings
    private let imagesDirectory: String
    /// Where the hidden mounts go: RUNDIR/mnt/IMAGE/SANDBOX. Mode 0700, outside the FUSE tree.
    private let names: InstanceNames
    let logger: Logger
    private let registry = Mutex(Registry())
    /// The COW watcher's thread state and per-sandbox alarms (SandboxManager+CowWatch.swift).
    let cowWatch = CowWatch()

    private struct Registry {
        var slots: [String: ImageSlot] = [:]
        var ready: [String: [String: LiveSandbox]] = [:]
        /// image/sandbox names being created or destroyed: taken, but not listed.
        var busy: Set<String> = []
        var nextSerial: UInt64 = 1
        var shuttingDown = false

        /// An image with no sandbox, live or in the making, has released its attachment: forget its slot.
        mutating func dropSlotIfUnused(_ image: String) {
            guard ready[image]?.isEmpty ?? true, !busy.contains(where: { $0.hasPrefix(image + "/") }) else { return }
            slots[image] = nil
        }

        mutating func takeSerial() -> UInt64 {
            defer { nextSerial += 1 }
            return nextSerial
        }
    }

    private final class ImageSlot: @unchecked Sendable {
        let lock = Mutex(())
        // Guarded by `lock`.
        var attachment: (any EngineAttachment)?
        var sandboxCount = 0
    }

    struct LiveSandbox: Sendable {
        let ref: SandboxRef
        let attachment: any EngineAttachment
        /// The image's attachment the sandbox was made on (it outlives the sandbox).
        let image: any EngineAttachment
        let access = SandboxAccess()
    }

    public init(imagesDirectory: String, names: InstanceNames, engine: any SandboxEngine,
                settings: SandboxSettings, logger: Logger) throws(SandboxError) {
        self.imagesDirectory = imagesDirectory
        self.names = names
        self.engine = engine
        self.settings = settings
        self.logger = logger
        try step("create \(names.hiddenMounts)") {
            try PrivateDirectory.create(names.runDirectory)
            try PrivateDirectory.create(names.hiddenMounts)
        }
    }

    // MARK: SandboxProvider

    public func imageNames() -> [String] {
        let live = registry.withLock { Array($0.slots.keys) }
        return Array(Set(ImageDirectory.names(in: imagesDirectory)).union(live)).sorted()
    }

    public func sandboxNames(image: String) -> [String]? {
        if let names = registry.withLock({ $0.ready[image].map { Array($0.keys) } }) { return names.sorted() }
        return ImageDirectory.path(of: image, in: imagesDirectory) == nil ? nil : []
    }

    public func sandbox(image: String, name: String) -> SandboxRef? {
        registry.withLock { $0.ready[image]?[name]?.ref }
    }

    public func createSandbox(image: String, name: String) throws -> SandboxRef {
        let started = ContinuousClock.now
        do {
            let ref = try create(image: image, name: name)
            logger.info("created sandbox \(image)/\(name) in \(started.duration(to: .now)) at \(ref.mountPath)")
            return ref
        } catch {
            logger.error("mkdir \(image)/sandboxes/\(name) failed: \(error)")
            throw error
        }
    }

    public func destroySandbox(image: String, name: String) throws {
        let started = ContinuousClock.now
        do {
            try destroy(image: image, name: name)
            logger.info("removed sandbox \(image)/\(name) in \(started.duration(to: .now))")
        } catch {
            logger.error("rmdir \(image)/sandboxes/\(name) failed: \(error)")
            throw error
        }
    }

    // MARK: Lifecycle

    private func create(image: String, name: String) throws(SandboxError) -> SandboxRef {
        if let problem = SandboxName.problem(with: name) { throw .invalidName(name, problem) }
        let key = "\(image)/\(name)"
        let (slot, serial) = try registry.withLock { (registry) throws(SandboxError) -> (ImageSlot, UInt64) in
            if registry.shuttingDown { throw .shuttingDown }
            guard registry.slots[image] != nil || ImageDirectory.path(of: image, in: imagesDirectory) != nil else {
                throw .noSuchImage(image)
            }
            if registry.ready[image]?[name] != nil || registry.busy.contains(key) {
                throw .exists(image: image, sandbox: name)
            }
            registry.busy.insert(key)
            let slot = registry.slots[image] ?? ImageSlot()
            registry.slots[image] = slot
            return (slot, registry.takeSerial())
        }
        do {
            let live = try slot.lock.withLock { _ throws(SandboxError) -> LiveSandbox in
                let imageAttachment: any EngineAttachment
                if let attached = slot.attachment {
                    imageAttachment = attached
                } else {
                    imageAttachment = try attachImage(image)
                    slot.attachment = imageAttachment
                }
                do throws(SandboxError) {
                    let live = try makeSandbox(image: image, name: name, serial: serial, on: imageAttachment)
                    slot.sandboxCount += 1
                    return live
                } catch {
                    if slot.sandboxCount == 0 { releaseImage(slot, image: image) }
                    throw error
                }
            }
            registry.withLock {
                $0.busy.remove(key)
                $0.ready[image, default: [:]][name] = live
            }
            return live.ref
        } catch {
            registry.withLock {
                $0.busy.remove(key)
                $0.dropSlotIfUnused(image)
            }
            throw error
        }
    }

    private func attachImage(_ image: String) throws(SandboxError) -> any EngineAttachment {
        guard let path = ImageDirectory.path(of: image, in: imagesDirectory) else { throw .noSuchImage(image) }
        let root: RootPartition
        do {
            root = try ImageLayout.findRoot(in: FileByteSource(path: path), partitionNumber: settings.partition)
        } catch {
            throw .unusableImage(image, error)
        }
        let serial = registry.withLock { $0.takeSerial() }
        let request = ImageRequest(name: image, path: path, serial: serial, root: root, settings: settings)
        return try step("attach image") { try engine.attachImage(request) }
    }

    private func makeSandbox(image: String, name: String, serial: UInt64,
                             on imageAttachment: any EngineAttachment) throws(SandboxError) -> LiveSandbox {
        let imageDirectory = names.hiddenMounts(image: image)
        let mountPath = names.hiddenMount(image: image, sandbox: name)
        try step("create mount point \(mountPath)") {
            try PrivateDirectory.create(imageDirectory)
            try PrivateDirectory.create(mountPath)
        }
        do {
            let request = SandboxRequest(image: image, name: name, serial: serial, mountPath: mountPath, settings: settings)
            let attachment = try engine.createSandbox(request, on: imageAttachment)
            return LiveSandbox(ref: SandboxRef(image: image, name: name, serial: serial, mountPath: mountPath),
                               attachment: attachment, image: imageAttachment)
        } catch {
            try? PrivateDirectory.remove(mountPath)
            if let error = error as? SandboxError { throw error }
            throw .stepFailed(step: "create sandbox", underlying: error)
        }
    }

    private func destroy(image: String, name: String) throws(SandboxError) {
        let key = "\(image)/\(name)"
        let (live, slot) = try registry.withLock { (registry) throws(SandboxError) -> (LiveSandbox, ImageSlot) in
            guard let live = registry.ready[image]?[name], let slot = registry.slots[image] else {
                throw .noSuchSandbox(image: image, sandbox: name)
            }
            registry.ready[image]?[name] = nil
            registry.busy.insert(key)
            return (live, slot)
        }
        do {
            try slot.lock.withLock { _ throws(SandboxError) in
                try live.access.retire(busy: .inUse(image: image, sandbox: name)) { () throws(SandboxError) in
                    do throws(TeardownError) { try live.attachment.teardown.run() } catch {
                        throw .stepFailed(step: "destroy sandbox", underlying: error)
                    }
                }
                // Before releaseImage, which removes the image's folder of mount points.
                try? PrivateDirectory.remove(live.ref.mountPath)
                slot.sandboxCount -= 1
                if slot.sandboxCount == 0 { releaseImage(slot, image: image) }
            }
        } catch {
            registry.withLock {
                $0.busy.remove(key)
                $0.ready[image, default: [:]][name] = live
            }
            throw error
        }
        registry.withLock {
            $0.busy.remove(key)
            if $0.ready[image]?.isEmpty == true { $0.ready[image] = nil }
            $0.dropSlotIfUnused(image)
        }
    }

    /// Called with the slot's lock held, when its last sandbox is gone.
    private func releaseImage(_ slot: ImageSlot, image: String) {
        guard let attachment = slot.attachment else { return }
        let failures = attachment.teardown.runAll()
        for failure in failures { logger.error("releasing image \(image): \(failure)") }
        slot.attachment = nil
        try? PrivateDirectory.remove(names.hiddenMounts(image: image))
    }

    /// Tears every sandbox down (at unmount or signal). Returns the errors it could not get past.
    @discardableResult
    public func shutdown() -> [any Error] {
        stopCowWatcher()
        let all = registry.withLock { registry -> [(String, String)] in
            registry.shuttingDown = true
            return registry.ready.flatMap { image, sandboxes in sandboxes.keys.map { (image, $0) } }
        }
        var errors: [any Error] = []
        for (image, name) in all {
            do { try destroySandbox(image: image, name: name) } catch { errors.append(error) }
        }
        if errors.isEmpty {
            try? PrivateDirectory.remove(names.hiddenMounts)
            try? PrivateDirectory.remove(names.runDirectory)
        }
        return errors
    }

    /// The ready sandbox, for diff and save.
    func live(image: String, name: String) -> LiveSandbox? {
        registry.withLock { $0.ready[image]?[name] }
    }

    /// The image file a sandbox's image comes from.
    func imagePath(_ image: String) -> String? { ImageDirectory.path(of: image, in: imagesDirectory) }

    /// Every ready sandbox (no usage read: for shutdown).
    public func readySandboxes() -> [SandboxRef] { liveSandboxes().map(\.ref) }

    /// Every ready sandbox with its engine attachment, for the COW watcher.
    func liveSandboxes() -> [(ref: SandboxRef, attachment: any EngineAttachment, access: SandboxAccess)] {
        registry.withLock { $0.ready.values.flatMap(\.values).map { ($0.ref, $0.attachment, $0.access) } }
    }

    public func status() -> [SandboxStatus] {
        let live = registry.withLock { $0.ready.values.flatMap(\.values) }
        return live.compactMap { sandbox in
            sandbox.access.ifAlive { engine.usage(of: sandbox.attachment) }.map { usage in
                SandboxStatus(image: sandbox.ref.image, sandbox: sandbox.ref.name, engine: engine.kind,
                              mountPath: sandbox.ref.mountPath, usage: usage)
            }
        }.sorted { ($0.image, $0.sandbox) < ($1.image, $1.sandbox) }
    }
}
