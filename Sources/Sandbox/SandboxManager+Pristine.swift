import DiskImage
import FATFS
import Glibc
import ImageCache
import LinuxBlock
import PrintableText
import Synchronization

/// `IMAGE/pristine/`: the image as it is, read-only, with its other partitions at their fstab paths. Its
/// kernel objects (a read-only loop device and mount per Linux partition) exist only while the FUSE layer
/// uses the view; FAT partitions need no device (FATFS reads the image file) and stay open, so their node
/// IDs stay valid while the kernel remembers them.
final class PristineSlot: @unchecked Sendable {
    let lock = Mutex(())
    // Guarded by `lock`.
    var ref: SandboxRef?
    var teardown: Teardown?
    /// Serials by partition number (0 for the root): stable for the life of the daemon.
    var serials: [Int: UInt64] = [:]
    /// FAT volumes by partition number, on `imageFD`.
    var fats: [Int: FATVolume] = [:]
    var imageFD: Int32 = -1
    /// A compressed image's cache file, held while `imageFD` (on it) is open.
    var cached: CachedImage?
}

extension SandboxManager {
    public func pristine(image: String, mayAttach: Bool) throws -> SandboxRef {
        let slot = pristineSlot(image)
        return try slot.lock.withLock { _ throws(SandboxError) -> SandboxRef in
            if let ref = slot.ref { return ref }
            guard mayAttach else { throw .rootOnly("attaching \(PathText.escape(image))/pristine") }
            do throws(SandboxError) {
                let ref = try attachPristine(image, slot)
                logger.info("pristine view of \(image) attached (\(ref.partitions.count) more partition(s))")
                return ref
            } catch {
                logger.error("\(image)/pristine: \(error)")
                throw error
            }
        }
    }

    public func releasePristine(image: String) {
        let slot = pristineSlot(image)
        slot.lock.withLock { _ in
            guard let teardown = slot.teardown else { return }
            for failure in teardown.runAll() { logger.error("releasing \(image)/pristine: \(failure)") }
            slot.teardown = nil
            slot.ref = nil
            logger.info("pristine view of \(image) released")
        }
    }

    /// At shutdown: every pristine view's devices, mounts and image fds.
    func releaseAllPristine() {
        let all = pristineSlots.withLock { slots in Array(slots) }
        for (image, slot) in all {
            releasePristine(image: image)
            slot.lock.withLock { _ in
                slot.fats = [:]
                if slot.imageFD >= 0 { close(slot.imageFD) }
                slot.imageFD = -1
                slot.cached = nil
            }
        }
        try? PrivateDirectory.remove(names.pristineMounts)
    }


    private func pristineSlot(_ image: String) -> PristineSlot {
        pristineSlots.withLock { slots in
            if let slot = slots[image] { return slot }
            let slot = PristineSlot()
            slots[image] = slot
            return slot
        }
    }

    private func serial(_ slot: PristineSlot, _ number: Int) -> UInt64 {
        if let serial = slot.serials[number] { return serial }
        let serial = takeSerial()
        slot.serials[number] = serial
        return serial
    }

    /// Called with the slot's lock held.
    private func attachPristine(_ image: String, _ slot: PristineSlot) throws(SandboxError) -> SandboxRef {
        if slot.cached == nil { slot.cached = try prepareIfNeeded(image) }
        guard let path = backingPath(image, cached: slot.cached) else { throw .noSuchImage(image) }
        let root = try findRoot(image, path)
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
            if slot.imageFD < 0 {
                slot.imageFD = try step("open \(path)") {
                    try systemCall("open", path) { open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
                }
            }
            var parts: [PartitionRef] = []
            for (index, mount) in builder.plan(rootMount: rootMount).mounts.enumerated() {
                let number = mount.partition.number
                do {
                    let content: PartitionContent
                    if mount.filesystem.type == .vfat {
                        if slot.fats[number] == nil { slot.fats[number] = try builder.pristineFAT(mount, imageFD: slot.imageFD) }
                        content = .fat(slot.fats[number]!, cow: nil)
                    } else {
                        // A second subvolume of one partition needs a mount point of its own.
                        let again = parts.contains { $0.mount.partition.number == number }
                        let target = names.pristineMount(image: image, partition: number) + (again ? "-\(index)" : "")
                        content = .mounted(path: try mountReadOnly(path, image, mount.partition, mount.filesystem,
                                                                   subvolume: mount.subvolume, at: target, teardown))
                    }
                    parts.append(PartitionRef(mount: mount, serial: serial(slot, number), content: content))
                } catch {
                    logger.error("\(image)/pristine: partition \(number) at \(mount.mountPoint) not shown: \(error)")
                }
            }
            let ref = SandboxRef(image: image, name: "pristine", serial: serial(slot, 0), mountPath: rootMount,
                                 partitions: parts, readOnly: true)
            slot.ref = ref
            slot.teardown = teardown
            return ref
        } catch {
            teardown.runAll()
            throw error
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
