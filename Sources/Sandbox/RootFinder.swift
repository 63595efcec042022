import DiskImage
import FATFS
import Glibc
import Logging

/// Chooses an image's root with DiskImage's RootChoice. The boot configuration is read from the image's FAT
/// partitions through FATFS (nothing mounted); when they name no root, from its Linux partitions (an ext4
/// /boot's loader entries or grub.cfg, a root's boot/armbianEnv.txt) mounted read-only for the look
/// (PartitionPeek), which also gives the fstab step each candidate's /etc/fstab. Logs one line with the
/// choice and its reason, one per table notice, and at debug level what was passed over.
struct RootFinder {
    let imageName: String
    let path: String
    let override: Int?
    let logger: Logger
    /// nil: nothing is mounted (FAT boot files only, no fstab step).
    var peek: PartitionPeek?

    func choose() throws(DiskImageError) -> RootPartition {
        let source = try FileByteSource(path: path)
        let table = try PartitionTable.read(source)
        for notice in table.notices { logger.notice("image \(imageName): \(notice)") }
        let probe = { (p: Partition) in FilesystemProbe.probe(source, partition: p) }
        var inputs = RootChoice.Inputs(table: table, probe: probe)
        inputs.override = override
        if override == nil || override! >= LVM.firstVolumeNumber {
            let (volumes, problems) = LVM.volumes(source, table: table)
            for problem in problems { logger.warning("image \(imageName): LVM2: \(problem)") }
            inputs.volumes = volumes
        }
        // One candidate is the root whatever its files say; only a btrfs needs a look then (its subvolume).
        let candidates = (table.partitions + inputs.volumes.compactMap(\.region)).compactMap(probe).filter(RootChoice.canBeRoot)
        let looks = PeekCache(finder: candidates.count > 1 || candidates.contains { $0.type == .btrfs } ? self : nil, probe: probe)
        let fat = fatBootFiles(table, probe: probe)
        inputs.slot = fat.slot ?? .a
        inputs.systemFile = fat.systemFile
        if override == nil {
            inputs.kernelRoots = fat.roots
            if inputs.kernelRoots.isEmpty {
                for p in table.partitions where !p.isExtendedContainer {
                    inputs.kernelRoots += looks.look(p)?.kernelRoots ?? []
                }
            }
        }
        inputs.fstab = { looks.look($0)?.fstab }
        let decision = try RootChoice.choose(inputs)
        for line in decision.passedOver { logger.debug("image \(imageName): \(line)") }
        logger.info("image \(imageName): root is \(Self.describe(decision.root))")
        return decision.root
    }

    /// "partition 3 (btrfs subvol=/root): root=UUID=... in loader/entries/... of partition 2", for the log and status.
    static func describe(_ root: RootPartition) -> String {
        let subvolume = root.subvolume.map { " \($0)" } ?? ""
        return "\(describe(root.partition)) (\(root.filesystem.type.rawValue)\(subvolume)): \(root.reason)"
    }

    static func describe(_ p: Partition) -> String {
        p.number >= LVM.firstVolumeNumber ? "\(p.typeName) (as partition \(p.number))" : "partition \(p.number)"
    }

    /// What the FAT partitions say: the root= of each one's boot files (partition order, BootFileKind order),
    /// the A/B slot the first autoboot.txt naming one selects, and a LibreELEC `SYSTEM` squashfs file.
    private func fatBootFiles(_ table: PartitionTable, probe: (Partition) -> FilesystemInfo?)
        -> (roots: [KernelRoot], slot: ABSlot?, systemFile: (partition: Int, name: String)?) {
        let fats = table.partitions.filter { !$0.isExtendedContainer && probe($0)?.type == .vfat }
        guard !fats.isEmpty else { return ([], nil, nil) }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return ([], nil, nil) }
        defer { close(fd) }
        var roots: [KernelRoot] = [], slot: ABSlot?, systemFile: (partition: Int, name: String)?
        for p in fats {
            let device = FileRegionDevice(fd: fd, offset: p.startByte, size: p.sizeBytes, writable: false)
            guard let volume = try? FATVolume(device: device, readOnly: true) else {
                logger.warning("image \(imageName): partition \(p.number) looks like FAT but cannot be read: its boot files are not consulted")
                continue
            }
            let files = FATBootFiles(volume: volume)
            roots += bootRoots(files, partition: p.number)
            if slot == nil {
                let name = "autoboot.txt of partition \(p.number)"
                do throws(BootConfigurationError) {
                    if let bytes = try files.read("autoboot.txt", name: name) {
                        slot = ABSlot.fromAutoboot(try BootConfiguration.text(bytes, file: name), table: table, file: name)
                    }
                } catch {
                    logger.warning("image \(imageName): \(error)")
                }
            }
            if systemFile == nil, files.starts("SYSTEM", with: Array("hsqs".utf8)) { systemFile = (p.number, "SYSTEM") }
        }
        return (roots, slot, systemFile)
    }

    /// Every root= the boot files on one partition name, in BootFileKind order; unreadable files logged.
    func bootRoots(_ files: some BootFiles, partition number: Int) -> [KernelRoot] {
        var roots: [KernelRoot] = []
        for kind in BootFileKind.allCases {
            for file in kind.paths {
                let paths = kind == .loaderEntry
                    ? LoaderEntry.order(files.list(file) ?? []).map { "\(file)/\($0)" } : [file]
                for path in paths {
                    let name = "\(path) of partition \(number)"
                    do throws(BootConfigurationError) {
                        guard let bytes = try files.read(path, name: name) else { continue }
                        if let root = try BootConfiguration.root(in: bytes, kind: kind, file: name) { roots.append(root) }
                    } catch {
                        logger.warning("image \(imageName): \(error)")
                    }
                }
            }
        }
        return roots
    }
}

/// What RootFinder learned from one mounted look at a Linux partition.
struct PartitionLook {
    var kernelRoots: [KernelRoot] = []
    var fstab: [FstabEntry]?
}

/// One look per partition, made when first needed (most images never need one: their FAT cmdline.txt decides).
private final class PeekCache {
    /// nil: no look is made.
    let finder: RootFinder?
    let probe: (Partition) -> FilesystemInfo?
    var looks: [Int: PartitionLook?] = [:]

    init(finder: RootFinder?, probe: @escaping (Partition) -> FilesystemInfo?) {
        self.finder = finder
        self.probe = probe
    }

    func look(_ p: Partition) -> PartitionLook? {
        if let known = looks[p.number] { return known }
        let found = make(p)
        looks[p.number] = found
        return found
    }

    private func make(_ p: Partition) -> PartitionLook? {
        guard let finder, let peek = finder.peek, let info = probe(p), RootChoice.canBeRoot(info) else { return nil }
        // Without device-mapper a partition in several ranges is never served: mkdir says why, once.
        guard p.isContiguous || peek.loops.joinsRanges else { return nil }
        do throws(SandboxError) {
            var look = try peek.look(p, info) { mount in
                PartitionLook(kernelRoots: finder.bootRoots(MountedBootFiles(root: mount), partition: p.number),
                              fstab: RootFiles.read(mount, "etc/fstab", limit: Fstab.maxBytes).map { Fstab.parse($0) })
            }
            // Fedora's btrfs: the default subvolume is the top level, which holds the subvolumes root and home;
            // the fstab is root's, and its / entry names subvol=root.
            if look.fstab == nil, info.type == .btrfs {
                look.fstab = try peek.look(p, info, options: [BtrfsSubvolume.id(5).mountOption]) { Self.subvolumeFstab($0) }
            }
            return look
        } catch {
            finder.logger.notice("image \(finder.imageName): partition \(p.number) could not be looked into: \(error)")
            return nil
        }
    }

    /// The fstab of the first subvolume directly below the top level whose `/` entry names that subvolume.
    static func subvolumeFstab(_ top: String) -> [FstabEntry]? {
        for name in (RootFiles.list(top, "", limit: 256) ?? []).sorted() {
            // 256 is a btrfs subvolume's root directory inode (BTRFS_FIRST_FREE_OBJECTID).
            guard RootFiles.directoryInode(top, name) == 256,
                  let text = RootFiles.read(top, "\(name)/etc/fstab", limit: Fstab.maxBytes) else { continue }
            let entries = Fstab.parse(text)
            guard let root = entries.last(where: { PartitionMounts.normalise($0.mountPoint) == "/" }),
                  case .success(let named) = BtrfsSubvolume.from(options: root.options), named == .path(name) else { continue }
            return entries
        }
        return nil
    }
}

/// Where boot files are read: a FAT volume (FATFS) or a mounted partition (RootFiles).
protocol BootFiles {
    /// A regular file's bytes; nil when absent or unreadable; a file above the limit is refused unread.
    func read(_ path: String, name: String) throws(BootConfigurationError) -> [UInt8]?
    /// The names in a directory; nil when there is none.
    func list(_ path: String) -> [String]?
}

struct MountedBootFiles: BootFiles {
    let root: String

    func read(_ path: String, name: String) throws(BootConfigurationError) -> [UInt8]? {
        switch RootFiles.readBounded(root, path, limit: BootConfiguration.maxBytes) {
        case .absent: return nil
        case .tooLarge(let bytes): throw .tooLarge(file: name, bytes: bytes, limit: BootConfiguration.maxBytes)
        case .bytes(let bytes): return bytes
        }
    }

    func list(_ path: String) -> [String]? { RootFiles.list(root, path) }
}

struct FATBootFiles: BootFiles {
    let volume: FATVolume

    func read(_ path: String, name: String) throws(BootConfigurationError) -> [UInt8]? {
        var looked: [FATNodeID] = []
        defer { for node in looked { volume.forget(node) } }
        guard let attr = find(path, &looked), !attr.isDirectory else { return nil }
        guard attr.size <= UInt64(BootConfiguration.maxBytes) else {
            throw .tooLarge(file: name, bytes: Int(clamping: attr.size), limit: BootConfiguration.maxBytes)
        }
        return try? volume.read(attr.id, at: 0, count: Int(attr.size))
    }

    /// Whether a regular file begins with `magic` (a file too large to read as configuration).
    func starts(_ path: String, with magic: [UInt8]) -> Bool {
        var looked: [FATNodeID] = []
        defer { for node in looked { volume.forget(node) } }
        guard let attr = find(path, &looked), !attr.isDirectory, attr.size >= UInt64(magic.count) else { return false }
        return (try? volume.read(attr.id, at: 0, count: magic.count)) == magic
    }

    func list(_ path: String) -> [String]? {
        var looked: [FATNodeID] = []
        defer { for node in looked { volume.forget(node) } }
        guard let attr = find(path, &looked), attr.isDirectory,
              let entries = try? volume.readDirectory(attr.id, from: 0, limit: 4096) else { return nil }
        return entries.map(\.name).filter { $0 != "." && $0 != ".." }
    }

    private func find(_ path: String, _ looked: inout [FATNodeID]) -> FATAttr? {
        var id = FATVolume.rootID
        var attr: FATAttr?
        for component in path.split(separator: "/") {
            guard let found = try? volume.lookup(parent: id, name: String(component)) else { return nil }
            looked.append(found.id)
            id = found.id
            attr = found
        }
        return attr
    }
}
