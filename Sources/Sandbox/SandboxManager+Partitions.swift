import DiskImage
import FATFS
import Glibc
import LinuxBlock

/// A sandbox's other partitions: FAT through FATFS over a block COW (a zram device sized to the budget),
/// ext2/3/4, xfs and btrfs through the engine like the root (a second overlay or snapshot of their own).
extension SandboxManager {
    /// Called with the image slot's lock held, after the root is mounted at `rootMount` (its fstab is the
    /// image's: nothing has written to it yet). A partition that cannot be made is logged and left out: the
    /// root keeps working.
    func makePartitions(image: String, name: String, slot: ImageSlot, rootMount: String) -> [LivePartition] {
        guard let root = slot.root, let path = backingPath(image, cached: slot.cached) else { return [] }
        let builder = PartitionBuilder(imageName: image, imagePath: path, root: root, logger: logger)
        var parts: [LivePartition] = []
        for mount in builder.plan(rootMount: rootMount).mounts {
            let serial = takeSerial()
            let teardown = Teardown()
            do {
                let part: LivePartition
                if mount.filesystem.type == .vfat {
                    part = try fatPartition(mount, serial: serial, builder: builder, teardown: teardown)
                } else {
                    part = try linuxPartition(mount, serial: serial, image: image, name: name, path: path, root: root,
                                              slot: slot, teardown: teardown)
                }
                parts.append(part)
            } catch {
                teardown.runAll()
                logger.error("sandbox \(image)/\(name): partition \(mount.partition.number) (\(mount.filesystem.type.rawValue)) at \(mount.mountPoint) not shown: \(error)")
            }
        }
        return parts
    }

    private func fatPartition(_ mount: PartitionMount, serial: UInt64, builder: PartitionBuilder,
                              teardown: Teardown) throws -> LivePartition {
        let imageFD = try builder.openImage(teardown)
        // The COW can never need more than the partition itself; the sandbox's budget caps it below that.
        let limit = min(settings.cowSize, (mount.partition.sizeBytes + 4095) / 4096 * 4096)
        let storeFD = try step("make FAT block COW store") { try engine.makeBlockStore(bytes: limit, teardown: teardown) }
        let (volume, cow) = try builder.sandboxFAT(mount, imageFD: imageFD, storeFD: storeFD, limit: limit)
        return LivePartition(ref: PartitionRef(mount: mount, serial: serial, content: .fat(volume, cow: cow)),
                             attachment: nil, teardown: teardown)
    }

    private func linuxPartition(_ mount: PartitionMount, serial: UInt64, image: String, name: String, path: String,
                                root: RootPartition, slot: ImageSlot, teardown: Teardown) throws -> LivePartition {
        let number = mount.partition.number
        let partImage: any EngineAttachment
        if let attached = slot.partitionImages[number] {
            partImage = attached
        } else {
            let request = ImageRequest(name: image, path: path, serial: takeSerial(),
                                       root: root.with(partition: mount.partition, filesystem: mount.filesystem),
                                       settings: settings)
            partImage = try step("attach partition \(number)") { try engine.attachImage(request) }
            slot.partitionImages[number] = partImage
        }
        let mountPath = names.partitionMount(image: image, sandbox: name, number: number)
        try step("create mount point \(mountPath)") { try PrivateDirectory.create(mountPath) }
        teardown.push("remove \(mountPath)") { try PrivateDirectory.remove(mountPath) }
        let request = SandboxRequest(image: image, name: name, serial: serial, mountPath: mountPath, settings: settings)
        let attachment = try engine.createSandbox(request, on: partImage)
        teardown.push("tear down partition \(number)") { try attachment.teardown.run() }
        return LivePartition(ref: PartitionRef(mount: mount, serial: serial, content: .mounted(path: mountPath)),
                             attachment: attachment, teardown: teardown)
    }

    /// See SandboxSettings.fatDumpDirectory.
    func dumpFAT(_ parts: [LivePartition], image: String, name: String, to directory: String) {
        for part in parts {
            guard case .fat(let volume, let cow?) = part.ref.content else { continue }
            let path = "\(directory)/\(image)-\(name)-p\(part.ref.mount.partition.number).img"
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            try? volume.flush()
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var offset: UInt64 = 0
            while offset < cow.size {
                let count = Int(min(UInt64(buffer.count), cow.size - offset))
                let ok = buffer.withUnsafeMutableBytes { raw in
                    (try? cow.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]))) != nil
                }
                guard ok, buffer.withUnsafeBytes({ pwrite(fd, $0.baseAddress, count, off_t(offset)) }) == count else { break }
                offset += UInt64(count)
            }
            logger.info("sandbox \(image)/\(name): FAT partition \(part.ref.mount.partition.number) written to \(path)")
        }
    }

    func partitionStatus(_ part: LivePartition) -> PartitionStatus {
        var used: UInt64 = 0, total: UInt64 = 0
        switch part.ref.content {
        case .fat(_, let cow?):
            used = cow.bytesUsed
            total = min(settings.cowSize, part.ref.mount.partition.sizeBytes)
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
