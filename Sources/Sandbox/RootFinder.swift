import DiskImage
import FATFS
import Glibc
import Logging

/// Chooses an image's root with DiskImage's RootChoice: the boot configuration is read from the image's FAT
/// partitions through FATFS (nothing is mounted); an ext4 /boot cannot be read without mounting and is
/// skipped, and so is the fstab step (the candidates' /etc/fstab would need mounts). Logs one line with the
/// choice and its reason, one per table notice, and at debug level what was passed over.
struct RootFinder {
    let imageName: String
    let path: String
    let override: Int?
    let logger: Logger

    func choose() throws(DiskImageError) -> RootPartition {
        let source = try FileByteSource(path: path)
        let table = try PartitionTable.read(source)
        for notice in table.notices { logger.notice("image \(imageName): \(notice)") }
        let probe = { (p: Partition) in FilesystemProbe.probe(source, offset: p.startByte, length: p.sizeBytes) }
        var inputs = RootChoice.Inputs(table: table, probe: probe)
        inputs.override = override
        if override == nil || override! >= LVM.firstVolumeNumber {
            let (volumes, problems) = LVM.volumes(source, table: table)
            for problem in problems { logger.warning("image \(imageName): LVM2: \(problem)") }
            inputs.volumes = volumes
        }
        if override == nil { inputs.kernelRoots = kernelRoots(table, probe: probe) }
        let decision = try RootChoice.choose(inputs)
        for line in decision.passedOver { logger.debug("image \(imageName): \(line)") }
        let root = decision.root
        logger.info("image \(imageName): root is \(Self.describe(root.partition)) (\(root.filesystem.type.rawValue)): \(decision.reason)")
        return root
    }

    static func describe(_ p: Partition) -> String {
        p.number >= LVM.firstVolumeNumber ? "\(p.typeName) (as partition \(p.number))" : "partition \(p.number)"
    }

    /// The root= of each FAT partition's boot files, in partition order and BootFileKind order.
    private func kernelRoots(_ table: PartitionTable, probe: (Partition) -> FilesystemInfo?) -> [KernelRoot] {
        let fats = table.partitions.filter { !$0.isExtendedContainer && probe($0)?.type == .vfat }
        guard !fats.isEmpty else { return [] }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var roots: [KernelRoot] = []
        for p in fats {
            let device = FileRegionDevice(fd: fd, offset: p.startByte, size: p.sizeBytes, writable: false)
            guard let volume = try? FATVolume(device: device, readOnly: true) else {
                logger.warning("image \(imageName): partition \(p.number) looks like FAT but cannot be read: its boot files are not consulted")
                continue
            }
            for kind in BootFileKind.allCases {
                for file in kind.paths {
                    let name = "\(file) of partition \(p.number)"
                    do throws(BootConfigurationError) {
                        guard let bytes = try read(file, in: volume, name: name) else { continue }
                        if let root = try BootConfiguration.root(in: bytes, kind: kind, file: name) { roots.append(root) }
                    } catch {
                        logger.warning("image \(imageName): \(error)")
                    }
                }
            }
        }
        return roots
    }

    /// A regular file's bytes; nil when absent or unreadable; a file above the limit is refused unread.
    private func read(_ path: String, in volume: FATVolume, name: String) throws(BootConfigurationError) -> [UInt8]? {
        var id = FATVolume.rootID
        var looked: [FATNodeID] = []
        defer { for node in looked { volume.forget(node) } }
        var attr: FATAttr?
        for component in path.split(separator: "/") {
            guard let found = try? volume.lookup(parent: id, name: String(component)) else { return nil }
            looked.append(found.id)
            id = found.id
            attr = found
        }
        guard let attr, !attr.isDirectory else { return nil }
        guard attr.size <= UInt64(BootConfiguration.maxBytes) else {
            throw .tooLarge(file: name, bytes: Int(clamping: attr.size), limit: BootConfiguration.maxBytes)
        }
        return try? volume.read(id, at: 0, count: Int(attr.size))
    }
}
