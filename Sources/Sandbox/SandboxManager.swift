import DiskImage
import FATFS
import Glibc
import ImageCache
import SandboxDiff
import Logging
import Synchronization

/// One row of `imgsandbox status`.
public struct SandboxStatus: Sendable, Codable, Equatable {
    public let image: String
    public let sandbox: String
    public let engine: String
    public let mountPath: String
    public let usage: SandboxUsage
    /// The image's other partitions in this sandbox, parents first.
    public let partitions: [PartitionStatus]
    /// Which partition is the root and why: "partition 2 (ext4): root=PARTUUID=... in cmdline.txt of partition 1".
    public let root: String?
}

/// One partition of a sandbox in `status`: where it is, what it holds, what its own COW store uses.
public struct PartitionStatus: Sendable, Codable, Equatable {
    public let number: Int
    public let mountPoint: String
    public let filesystem: String
    public let cowUsedBytes: UInt64
    public let cowTotalBytes: UInt64
}

/// Owns every image attachment and sandbox of one serve process: naming, lifecycle, concurrency. The
/// coordinator: pristine views, partitions, the COW watcher and change reading are collaborators it holds;
/// save (SandboxSave's SaveJob) reads a sandbox through `reading`.
///
/// Locking: `registry` (short sections, never held across kernel work) guards the names; each image's
/// `ImageSlot.state` serialises the slow engine work of that image (attach, create, destroy, release), so
/// sandboxes of different images are made in parallel. The whole order of the Sandbox target, outermost
/// first (a lock is only ever taken while holding locks above it, never below):
///   1. ImageSlot.state, or a PristineViews view's state: one image's kernel work
///   2. SandboxAccess           a sandbox's readers (status, COW watcher) against its teardown
///   3. Teardown                the undo stack, held while its steps run (unmount, dm remove ...)
///   4. CowStore.state          its zram segments; held across the dm suspend/load/resume of a grow
///   5. registry, SandboxPartitions.shared, CowWatcher.state, PristineViews.views: leaves, short sections
/// (ImageSlot.state -> registry is taken directly too; the COW watcher goes 2 -> 4 without 1 or 3.)
public final class SandboxManager: SandboxProvider {
    public let engine: any SandboxEngine
    public let settings: SandboxSettings
    /// Where the hidden mounts go: RUNDIR/mnt/IMAGE/SANDBOX. Mode 0700, outside the FUSE tree.
    public let names: InstanceNames
    public let logger: Logger
    private let registry = Mutex(Registry())
    // The collaborators, each owning its state.
    /// Which file serves each image, its cache file and root.
    private let images: ImageSources
    private let serials = Serials()
    /// `IMAGE/pristine/`.
    private let pristineViews: PristineViews
    /// A sandbox's other partitions, and each image's partition attachments.
    private let partitions: SandboxPartitions
    private let cowWatcher: CowWatcher
    /// Opens a sandbox's change sources and lists its changes (diff; save reads through `reading`).
    private let changeReader: ChangeReader

    private struct Registry {
        var slots: [String: ImageSlot] = [:]
        var ready: [String: [String: LiveSandbox]] = [:]
        /// image/sandbox names being created or destroyed: taken, but not listed.
        var busy: Set<String> = []
        var shuttingDown = false

        /// An image with no sandbox, live or in the making, has released its attachment: forget its slot.
        mutating func dropSlotIfUnused(_ image: String) {
            guard ready[image]?.isEmpty ?? true, !busy.contains(where: { $0.hasPrefix(image + "/") }) else { return }
            slots[image] = nil
        }
    }

    /// One image's attachment. Its lock is held across the image's slow kernel work (attach, create, destroy,
    /// release), which it serialises.
    final class ImageSlot: Sendable {
        struct State {
            var attachment: (any EngineAttachment)?
            var root: RootPartition?
            /// A compressed image's cache file, held in use while the attachment lives.
            var cached: CachedImage?
            var sandboxCount = 0
        }
        let state = Mutex(State())
    }

    public init(imagesDirectory: String, names: InstanceNames, engine: any SandboxEngine,
                settings: SandboxSettings, logger: Logger, imageCache: ImageCache? = nil) throws(SandboxError) {
        self.names = names
        self.engine = engine
        self.settings = settings
        self.logger = logger
        images = ImageSources(directory: imagesDirectory, cache: imageCache, settings: settings, names: names,
                              loops: engine.readOnlyLoops, logger: logger)
        pristineViews = PristineViews(images: images, serials: serials, engine: engine, names: names, logger: logger)
        partitions = SandboxPartitions(engine: engine, settings: settings, names: names, serials: serials, logger: logger)
        cowWatcher = CowWatcher(engine: engine, partitions: partitions, logger: logger)
        changeReader = ChangeReader(engine: engine)
        try step("create \(names.hiddenMounts)") {
            try PrivateDirectory.create(names.runDirectory)
            try PrivateDirectory.create(names.hiddenMounts)
        }
    }

    // MARK: SandboxProvider

    public func imageNames() -> [String] {
        let live = registry.withLock { Array($0.slots.keys) }
        return Array(Set(images.offered()).union(live)).sorted()
    }

    public func sandboxNames(image: String) -> [String]? {
        if let names = registry.withLock({ $0.ready[image].map { Array($0.keys) } }) { return names.sorted() }
        return images.source(of: image) == nil ? nil : []
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
            guard registry.slots[image] != nil || images.source(of: image) != nil else {
                throw .noSuchImage(image)
            }
            if registry.ready[image]?[name] != nil || registry.busy.contains(key) {
                throw .exists(image: image, sandbox: name)
            }
            registry.busy.insert(key)
            let slot = registry.slots[image] ?? ImageSlot()
            registry.slots[image] = slot
            return (slot, serials.take())
        }
        do {
            // A compressed image is decompressed before the slot lock: a second mkdir meanwhile waits for
            // the same work in the cache (not behind the lock), and other images are not held up.
            let prepared = slot.state.withLock({ $0.attachment == nil }) ? try images.prepareIfNeeded(image) : nil
            let live = try slot.state.withLock { (state) throws(SandboxError) -> LiveSandbox in
                let imageAttachment: any EngineAttachment
                if let attached = state.attachment {
                    imageAttachment = attached
                } else {
                    // Attached and released again since the check above: prepare now.
                    let cached = if let prepared { prepared } else { try images.prepareIfNeeded(image) }
                    imageAttachment = try attachImage(image, &state, cached: cached)
                    state.attachment = imageAttachment
                    state.cached = cached
                }
                do throws(SandboxError) {
                    let live = try makeSandbox(image: image, name: name, serial: serial, on: imageAttachment, state)
                    state.sandboxCount += 1
                    return live
                } catch {
                    if state.sandboxCount == 0 { releaseImage(&state, image: image) }
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

    private func attachImage(_ image: String, _ state: inout ImageSlot.State, cached: CachedImage?) throws(SandboxError) -> any EngineAttachment {
        guard let path = images.backingPath(image, cached: cached) else { throw .noSuchImage(image) }
        let root = try images.findRoot(image, path)
        state.root = root
        let request = ImageRequest(name: image, path: path, serial: serials.take(), root: root, settings: settings)
        return try step("attach image") { try engine.attachImage(request) }
    }

    private func makeSandbox(image: String, name: String, serial: UInt64, on imageAttachment: any EngineAttachment,
                             _ state: ImageSlot.State) throws(SandboxError) -> LiveSandbox {
        let imageDirectory = names.hiddenMounts(image: image)
        let mountPath = names.hiddenMount(image: image, sandbox: name)
        try step("create mount point \(mountPath)") {
            try PrivateDirectory.create(imageDirectory)
            try PrivateDirectory.create(mountPath)
        }
        do {
            let request = SandboxRequest(image: image, name: name, serial: serial, mountPath: mountPath, settings: settings)
            let attachment = try engine.createSandbox(request, on: imageAttachment)
            let parts: [LivePartition] = if let root = state.root, let path = images.backingPath(image, cached: state.cached) {
                partitions.make(image: image, name: name, path: path, root: root, rootMount: mountPath,
                                rootSandbox: (attachment, imageAttachment))
            } else { [] }
            let journal = engine.needsChangeJournal ? ChangeJournal(mountPath: mountPath) : nil
            let ref = SandboxRef(image: image, name: name, serial: serial, mountPath: mountPath, partitions: parts.map(\.ref),
                                 baseUse: attachment.baseUse, journal: journal)
            return LiveSandbox(ref: ref, attachment: attachment, image: imageAttachment, parts: parts, root: state.root)
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
        var broken = false
        do {
            try slot.state.withLock { (state) throws(SandboxError) in
                try live.access.retire(busy: .inUse(image: image, sandbox: name), whole: { !live.partlyTornDown }) {
                    () throws(SandboxError) in
                    do throws(TeardownError) {
                        for part in live.parts.reversed() { try part.teardown.run() }
                        try live.attachment.teardown.run()
                    } catch {
                        // Part of it is gone (its mount, perhaps): never serve it again as if whole. Listed
                        // as broken; another rmdir runs the remaining steps.
                        broken = live.partlyTornDown
                        throw .stepFailed(step: "destroy sandbox", underlying: error)
                    }
                }
                // Before releaseImage, which removes the image's folder of mount points.
                try? PrivateDirectory.remove(live.ref.mountPath)
                state.sandboxCount -= 1
                if state.sandboxCount == 0 { releaseImage(&state, image: image) }
            }
        } catch {
            var kept = live
            kept.ref.broken = kept.ref.broken || broken
            if broken, !live.ref.broken { logger.error("sandbox \(image)/\(name) is broken: its teardown stopped part-way; rmdir retries the remaining steps") }
            registry.withLock {
                $0.busy.remove(key)
                $0.ready[image, default: [:]][name] = kept
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
    private func releaseImage(_ state: inout ImageSlot.State, image: String) {
        guard let attachment = state.attachment else { return }
        partitions.release(image: image)
        let failures = attachment.teardown.runAll()
        for failure in failures { logger.error("releasing image \(image): \(failure)") }
        state.attachment = nil
        state.cached = nil
        try? PrivateDirectory.remove(names.hiddenMounts(image: image))
    }

    /// Tears every sandbox down (at unmount or signal). Returns the errors it could not get past.
    @discardableResult
    public func shutdown() -> [any Error] {
        cancelPreparations()
        cowWatcher.stop()
        let all = registry.withLock { registry -> [(String, String)] in
            registry.shuttingDown = true
            return registry.ready.flatMap { image, sandboxes in sandboxes.keys.map { (image, $0) } }
        }
        var errors: [any Error] = []
        for (image, name) in all {
            do { try destroySandbox(image: image, name: name) } catch { errors.append(error) }
        }
        pristineViews.releaseAll()
        if errors.isEmpty {
            try? PrivateDirectory.remove(names.hiddenMounts)
            try? PrivateDirectory.remove(names.runDirectory)
        }
        return errors
    }

    /// What the sandbox changed, sorted by path. The sandbox cannot be removed meanwhile (rmdir: EBUSY).
    public func diff(image: String, name: String) throws(SandboxError) -> [Change] {
        let started = ContinuousClock.now
        let changes = try reading(image: image, name: name) { (sandbox) throws(SandboxError) in try ChangeReader.all(sandbox) }
        logger.info("diff \(image)/\(name): \(changes.count) changes in \(started.duration(to: .now))")
        return changes
    }

    /// Runs `body` on the sandbox's change sources (diff, save) with the sandbox kept alive: rmdir answers
    /// EBUSY meanwhile.
    public func reading<T>(image: String, name: String,
                           _ body: (SandboxChanges) throws(SandboxError) -> T) throws(SandboxError) -> T {
        guard let imagePath = imagePath(image) else { throw .noSuchImage(image) }
        guard let live = registry.withLock({ $0.ready[image]?[name] }) else { throw .noSuchSandbox(image: image, sandbox: name) }
        // The root the sandbox was made of (its btrfs subvolume too); chosen anew only if it has none.
        let root = if let root = live.root { root } else { try images.findRoot(image, imagePath) }
        guard let result = try changeReader.reading(live, imagePath: imagePath, imageRoot: root, body) else {
            throw .noSuchSandbox(image: image, sandbox: name)
        }
        return result
    }

    /// The image file a sandbox's image comes from: for a compressed image, its decompressed cache file.
    func imagePath(_ image: String) -> String? {
        if let slot = registry.withLock({ $0.slots[image] }), let cached = slot.state.withLock({ $0.cached?.path }) {
            return cached
        }
        return images.source(of: image).flatMap { $0.format == .raw ? $0.path : nil }
    }

    /// Every ready sandbox (no usage read: for shutdown).
    public func readySandboxes() -> [SandboxRef] { liveSandboxes().map(\.ref) }

    /// Every ready sandbox, for the COW watcher.
    func liveSandboxes() -> [LiveSandbox] {
        registry.withLock { Array($0.ready.values.flatMap(\.values)) }
    }

    /// Runs the COW watcher (CowWatcher) over every ready sandbox each `interval`, until shutdown.
    public func startCowWatcher(interval: Duration = .milliseconds(200)) {
        cowWatcher.start(interval: interval) { [weak self] in self?.liveSandboxes() ?? [] }
    }

    /// One pass of the COW watcher (also called directly by tests).
    public func checkCowStores() { cowWatcher.check(liveSandboxes()) }

    /// Stops decompressions in progress (their mkdir fails): at shutdown.
    public func cancelPreparations() { images.cache?.cancelAll() }

    /// Compressed images being decompressed, with their progress.
    public func preparations() -> [PreparationStatus] { images.cache?.preparations() ?? [] }

    public func pristine(image: String, mayAttach: Bool) throws -> SandboxRef {
        try pristineViews.view(image: image, mayAttach: mayAttach)
    }

    public func releasePristine(image: String) { pristineViews.release(image: image) }

    public func status() -> [SandboxStatus] {
        let live = registry.withLock { $0.ready.values.flatMap(\.values) }
        return live.compactMap { sandbox in
            let read = sandbox.ref.broken ? (SandboxUsage(state: .broken), [])
                : sandbox.access.ifAlive { (engine.usage(of: sandbox.attachment), sandbox.parts.map(partitions.status)) }
            return read.map { usage, parts in
                SandboxStatus(image: sandbox.ref.image, sandbox: sandbox.ref.name, engine: engine.kind,
                              mountPath: sandbox.ref.mountPath, usage: usage, partitions: parts,
                              root: sandbox.root.map(RootFinder.describe))
            }
        }.sorted { ($0.image, $0.sandbox) < ($1.image, $1.sandbox) }
    }
}
