import DiskImage
import FATFS
import Glibc
import ImageCache
import LinuxBlock
import Logging
import PrintableText
import Synchronization

/// `IMAGE/pristine/`: the image as it is, read-only, with its other partitions at their fstab paths. Its
/// kernel objects (a read-only loop device and mount per Linux partition) exist only while the FUSE layer
/// uses the view; FAT partitions need no device (FATFS reads the image file) and stay open, so their node
/// IDs stay valid while the kernel remembers them.
///
/// Locking: `views` (a leaf, short) finds an image's view; a view's `state` is held across its kernel work
/// (attach, release), so views of different images proceed in parallel.
final class PristineViews: Sendable {
    private final class View: Sendable {
        struct State {
            var ref: SandboxRef?
            var teardown: Teardown?
            /// Serials by partition number (0 for the root): stable for the life of the daemon.
            var serials: [Int: UInt64] = [:]
            /// FAT volumes by partition number, on `imageFD`.
            var fats: [Int: FATVolume] = [:]
            var imageFD: Int32 = -1
            /// Owns `imageFD`: run at shutdown, not when the view's devices are released.
            let lasting = Teardown()
            /// A compressed image's cache file, held while `imageFD` (on it) is open.
            var cached: CachedImage?
        }
        let state = Mutex(State())
    }

    private let views = Mutex<[String: View]>([:])
    private let images: ImageSources
    private let serials: Serials
    private let engine: any SandboxEngine
    private let names: InstanceNames
    private let logger: Logger

    init(images: ImageSources, serials: Serials, engine: any SandboxEngine, names: InstanceNames, logger: Logger) {
        self.images = images
        self.serials = serials
        self.engine = engine
        self.names = names
        self.logger = logger
    }

    /// The view of `image`, attached now if it is not and `mayAttach`.
    func view(image: String, mayAttach: Bool) throws(SandboxError) -> SandboxRef {
        try view(image).state.withLock { (state) throws(SandboxError) -> SandboxRef in
            if let ref = state.ref { return ref }
            guard mayAttach else { throw .rootOnly("attaching \(PathText.escape(image))/pristine") }
            do throws(SandboxError) {
                let ref = try attach(image, &state)
                logger.info("pristine view of \(image) attached (\(ref.partitions.count) more partition(s))")
                return ref
            } catch {
                logger.error("\(image)/pristine: \(error)")
                throw error
            }
        }
    }

    func release(image: String) {
        view(image).state.withLock { state in release(image, &state) }
    }

    /// At shutdown: every view's devices, mounts and image fds.
    func releaseAll() {
        for (image, view) in views.withLock({ Array($0) }) {
            view.state.withLock { state in
                release(image, &state)
                state.fats = [:]
                state.lasting.runAll()
                state.imageFD = -1
                state.cached = nil
            }
        }
        try? PrivateDirectory.remove(names.pristineMounts)
    }

    private func release(_ image: String, _ state: inout View.State) {
        guard let teardown = state.teardown else { return }
        for failure in teardown.runAll() { logger.error("releasing \(image)/pristine: \(failure)") }
        state.teardown = nil
        state.ref = nil
        logger.info("pristine view of \(image) released")
    }

    private func view(_ image: String) -> View {
        views.withLock { views in
            if let view = views[image] { return view }
            let view = View()
            views[image] = view
            return view
        }
    }

    private func serial(_ state: inout View.State, _ number: Int) -> UInt64 {
        if let serial = state.serials[number] { return serial }
        let serial = serials.take()
        state.serials[number] = serial
        return serial
    }

    private func attach(_ image: String, _ state: inout View.State) throws(SandboxError) -> SandboxRef {
        if state.cached == nil { state.cached = try images.prepareIfNeeded(image) }
        guard let path = images.backingPath(image, cached: state.cached) else { throw .noSuchImage(image) }
        let root = try images.findRoot(image, path)
        let teardown = Teardown()
        do {
            let directory = names.pristineMounts(image: image)
            try step("create \(directory)") {
                try PrivateDirectory.create(names.pristineMounts)
                try PrivateDirectory.create(directory)
            }
            teardown.push("remove \(directory)") { try PrivateDirectory.remove(directory) }
            let rootMount = try mountReadOnly(path, image, root.partition, root.filesystem, subvolume: root.subvolume,
                                              at: names.pristineMount(image: image, partition: 0), teardown)
            let builder = PartitionBuilder(imageName: image, imagePath: path, root: root, logger: logger)
            if state.imageFD < 0 {
                state.imageFD = try openImage(path, owner: state.lasting)
            }
            var parts: [PartitionRef] = []
            for (index, mount) in builder.plan(rootMount: rootMount).mounts.enumerated() {
                let number = mount.partition.number
                do {
                    let content: PartitionContent
                    if mount.filesystem.type == .vfat {
                        let volume = try state.fats[number] ?? builder.pristineFAT(mount, imageFD: state.imageFD)
                        state.fats[number] = volume
                        content = .fat(volume, cow: nil)
                    } else {
                        // A second subvolume of one partition needs a mount point of its own.
                        let again = parts.contains { $0.mount.partition.number == number }
                        let target = names.pristineMount(image: image, partition: number) + (again ? "-\(index)" : "")
                        content = .mounted(path: try mountReadOnly(path, image, mount.partition, mount.filesystem,
                                                                   subvolume: mount.subvolume, at: target, teardown))
                    }
                    parts.append(PartitionRef(mount: mount, serial: serial(&state, number), content: content))
                } catch {
                    logger.error("\(image)/pristine: partition \(number) at \(mount.mountPoint) not shown: \(error)")
                }
            }
            let ref = SandboxRef(image: image, name: "pristine", serial: serial(&state, 0), mountPath: rootMount,
                                 partitions: parts, readOnly: true)
            state.ref = ref
            state.teardown = teardown
            return ref
        } catch {
            teardown.runAll()
            throw error
        }
    }

    private func openImage(_ path: String, owner: Teardown) throws(SandboxError) -> Int32 {
        do throws(SystemError) {
            return owner.own(try FileDescriptor.open(path, O_RDONLY | O_NOFOLLOW), path)
        } catch {
            throw .stepFailed(step: "open \(path)", underlying: error)
        }
    }

    /// The partition's shared read-only loop device (ReadOnlyLoops) and a read-only mount of it (a dirty
    /// journal not replayed).
    private func mountReadOnly(_ path: String, _ image: String, _ partition: Partition, _ fs: FilesystemInfo,
                               subvolume: BtrfsSubvolume?, at target: String, _ teardown: Teardown) throws(SandboxError) -> String {
        let device = try step("attach loop device") {
            try engine.readOnlyLoops.acquire(file: path, partition: partition, label: names.loopLabel(image: image), teardown: teardown)
        }
        try step("create \(target)") { try PrivateDirectory.create(target) }
        teardown.push("remove \(target)") { try PrivateDirectory.remove(target) }
        try step("mount \(device) read-only on \(target)") {
            try Mount.mount(source: device, target: target, type: fs.type.rawValue, flags: [.rdonly, .nosuid, .nodev],
                            options: OverlayEngine.readOnlyOptions(fs.type, subvolume.map { [$0.mountOption] } ?? []))
        }
        teardown.push("unmount \(target)") { try Mount.unmountNamingHolders(target) }
        return target
    }
}
