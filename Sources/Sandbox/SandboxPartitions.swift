import DiskImage
import FATFS
import Glibc
import LinuxBlock
import Logging
import SandboxDiff
import Synchronization

/// A sandbox's other partitions: FAT through FATFS over a block COW (a zram device sized to the budget),
/// ext2/3/4, xfs and btrfs through the engine like the root (a second overlay or snapshot of their own); a
/// further subvolume of a btrfs already shown (the root's, Fedora's /home) through that one's COW store.
/// Owns each image's partition attachments, which its sandboxes share.
///
/// Locking: `shared` is a leaf held for map updates only; the kernel work runs under the caller's image
/// lock (SandboxManager's ImageSlot), which keeps one image's partitions from being attached twice.
final class SandboxPartitions: Sendable {
    private let engine: any SandboxEngine
    private let settings: SandboxSettings
    private let names: InstanceNames
    private let serials: Serials
    private let logger: Logger
    /// Engine attachments of each image's other Linux partitions, by image, then by number and btrfs subvolume
    /// ("4", "4 subvol=/@home"); made at first need, released with the image.
    private let shared = Mutex<[String: [String: any EngineAttachment]]>([:])

    init(engine: any SandboxEngine, settings: SandboxSettings, names: InstanceNames, serials: Serials, logger: Logger) {
        self.engine = engine
        self.settings = settings
        self.names = names
        self.serials = serials
        self.logger = logger
    }

    /// Called with the image's lock held, after the root is mounted at `rootMount` (its fstab is the
    /// image's: nothing has written to it yet). A partition that cannot be made is logged and left out: the
    /// root keeps working.
    func make(image: String, name: String, path: String, root: RootPartition, rootMount: String,
              rootSandbox: (attachment: any EngineAttachment, image: any EngineAttachment)) -> [LivePartition] {
        let builder = PartitionBuilder(imageName: image, imagePath: path, root: root, logger: logger)
        var parts: [LivePartition] = []
        for mount in builder.plan(rootMount: rootMount).mounts {
            let serial = serials.take()
            let teardown = Teardown()
            do {
                let part: LivePartition
                if mount.filesystem.type == .vfat {
                    part = try fatPartition(mount, serial: serial, builder: builder, teardown: teardown)
                } else if mount.filesystem.type == .btrfs, let owner = btrfsOwner(mount.partition.number, root: root,
                                                                                rootSandbox: rootSandbox, parts: parts) {
                    let variant = parts.filter { $0.ref.mount.partition.number == mount.partition.number }.count + 1
                    part = try subvolumePartition(mount, serial: serial, image: image, name: name, variant: variant, owner: owner,
                                                  teardown: teardown)
                } else {
                    part = try linuxPartition(mount, serial: serial, image: image, name: name, path: path, root: root,
                                              teardown: teardown)
                }
                parts.append(part)
            } catch {
                teardown.runAll()
                logger.error("sandbox \(image)/\(name): partition \(mount.partition.number) (\(mount.filesystem.type.rawValue)) at \(mount.mountPoint) not shown: \(error)")
            }
        }
        return parts
    }

    /// Called with the image's lock held, when its last sandbox is gone: the partition attachments it shared.
    func release(image: String) {
        let attached = shared.withLock { $0.removeValue(forKey: image) ?? [:] }
        for (number, part) in attached {
            for failure in part.teardown.runAll() { logger.error("releasing image \(image) partition \(number): \(failure)") }
        }
    }

    private func fatPartition(_ mount: PartitionMount, serial: UInt64, builder: PartitionBuilder,
                              teardown: Teardown) throws -> LivePartition {
        let imageFD = try builder.openImage(teardown)
        // The store is made as large as the COW may ever grow (zram and a sparse file cost nothing until
        // written); the overlay's limit starts at --cow-size and the COW watcher raises it a step at a time.
        let limit = min(settings.cowSize, fatCowMax(mount))
        let storeFD = try step("make FAT block COW store") { try engine.makeBlockStore(bytes: fatCowMax(mount), teardown: teardown) }
        let (volume, cow) = try builder.sandboxFAT(mount, imageFD: imageFD, storeFD: storeFD, limit: limit)
        return LivePartition(ref: PartitionRef(mount: mount, serial: serial, content: .fat(volume, cow: cow)),
                             attachment: nil, teardown: teardown)
    }

    /// The sandbox (and its image attachment) already showing a subvolume of the btrfs on partition `number`.
    private func btrfsOwner(_ number: Int, root: RootPartition, rootSandbox: (attachment: any EngineAttachment, image: any EngineAttachment),
                            parts: [LivePartition]) -> (attachment: any EngineAttachment, image: any EngineAttachment)? {
        if number == root.partition.number { return rootSandbox }
        guard let first = parts.first(where: { $0.ref.mount.partition.number == number }),
              let attachment = first.attachment, let image = first.image else { return nil }
        return (attachment, image)
    }

    private func subvolumePartition(_ mount: PartitionMount, serial: UInt64, image: String, name: String, variant: Int,
                                    owner: (attachment: any EngineAttachment, image: any EngineAttachment),
                                    teardown: Teardown) throws -> LivePartition {
        let mountPath = names.partitionMount(image: image, sandbox: name, number: mount.partition.number, variant: variant)
        try step("create mount point \(mountPath)") { try PrivateDirectory.create(mountPath) }
        teardown.push("remove \(mountPath)") { try PrivateDirectory.remove(mountPath) }
        let attachment = try engine.mountSubvolume(mount.subvolume, of: owner.attachment, image: owner.image, at: mountPath)
        teardown.push("tear down \(mount.mountPoint)") { try attachment.teardown.run() }
        let journal = engine.needsChangeJournal ? ChangeJournal(mountPath: mountPath) : nil
        return LivePartition(ref: PartitionRef(mount: mount, serial: serial, content: .mounted(path: mountPath), journal: journal),
                             attachment: attachment, image: owner.image, teardown: teardown)
    }

    private func linuxPartition(_ mount: PartitionMount, serial: UInt64, image: String, name: String, path: String,
                                root: RootPartition, teardown: Teardown) throws -> LivePartition {
        let number = mount.partition.number
        let key = "\(number)" + (mount.subvolume.map { " \($0)" } ?? "")
        let partImage: any EngineAttachment
        if let attached = shared.withLock({ $0[image]?[key] }) {
            partImage = attached
        } else {
            let request = ImageRequest(name: image, path: path, serial: serials.take(),
                                       root: root.with(partition: mount.partition, filesystem: mount.filesystem,
                                                       subvolume: mount.subvolume),
                                       settings: settings)
            partImage = try step("attach partition \(number)") { try engine.attachImage(request) }
            shared.withLock { $0[image, default: [:]][key] = partImage }
        }
        let mountPath = names.partitionMount(image: image, sandbox: name, number: number)
        try step("create mount point \(mountPath)") { try PrivateDirectory.create(mountPath) }
        teardown.push("remove \(mountPath)") { try PrivateDirectory.remove(mountPath) }
        let request = SandboxRequest(image: image, name: name, serial: serial, mountPath: mountPath, settings: settings)
        let attachment = try engine.createSandbox(request, on: partImage)
        teardown.push("tear down partition \(number)") { try attachment.teardown.run() }
        let journal = engine.needsChangeJournal ? ChangeJournal(mountPath: mountPath) : nil
        return LivePartition(ref: PartitionRef(mount: mount, serial: serial, content: .mounted(path: mountPath), journal: journal),
                             attachment: attachment, image: partImage, teardown: teardown)
    }

    /// The most block COW a FAT partition's sandbox copy can have: --cow-max (else --cow-size), and never
    /// more than the partition itself.
    func fatCowMax(_ mount: PartitionMount) -> UInt64 {
        min(settings.effectiveCowMax, (mount.partition.sizeBytes + 4095) / 4096 * 4096)
    }

    /// A FAT partition's block COW as the watcher and status read it. Full means ENOSPC for the writes that
    /// need one more block (the volume stays sound), not the dm kind of overflow.
    func fatUsage(_ part: LivePartition, _ cow: COWOverlay) -> SandboxUsage {
        SandboxUsage(cowUsedBytes: cow.bytesUsed, cowTotalBytes: cow.limitBytes, cowMaxBytes: fatCowMax(part.ref.mount))
    }

    /// Raises a FAT partition's COW limit by a --cow-size step when less than a step is left and the store
    /// holds more; returns the new limit, or nil.
    func growFAT(_ part: LivePartition, _ cow: COWOverlay) -> UInt64? {
        let (used, limit, max) = (cow.bytesUsed, cow.limitBytes, fatCowMax(part.ref.mount))
        guard limit < max, CowStore.needsGrowth(usedBytes: used, totalBytes: limit, stepBytes: settings.cowSize) else { return nil }
        return cow.raiseLimit(to: min(max, limit + settings.cowSize))
    }

    func status(_ part: LivePartition) -> PartitionStatus {
        var used: UInt64 = 0, total: UInt64 = 0
        switch part.ref.content {
        case .fat(_, let cow?):
            used = cow.bytesUsed
            total = cow.limitBytes
        case .fat(_, nil):
            break
        case .mounted:
            if let attachment = part.attachment {
                let usage = engine.cowUsage(of: attachment)
                used = usage.cowUsedBytes
                total = usage.cowTotalBytes
            }
        }
        return PartitionStatus(number: part.ref.mount.partition.number, mountPoint: part.ref.mount.mountPoint,
                               filesystem: part.ref.mount.filesystem.type.rawValue, cowUsedBytes: used, cowTotalBytes: total)
    }
}
