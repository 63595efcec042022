/// A partition of the image that a sandbox shows at a path below its root, as the image's fstab mounts it.
public struct PartitionMount: Sendable, Equatable {
    public let partition: Partition
    public let filesystem: FilesystemInfo
    /// Absolute, normalised ("/boot/firmware"), never "/".
    public let mountPoint: String
    /// fstab's `ro`.
    public let readOnly: Bool
    /// false for the FAT fallback (no fstab entry named it).
    public let fromFstab: Bool
    /// A FAT partition's owner and masks (fstab's uid=, gid=, umask=, fmask=, dmask=).
    public let fatOptions: FATMountOptions
    /// btrfs: fstab's `subvol=`/`subvolid=`; nil: the default subvolume.
    public let subvolume: BtrfsSubvolume?

    public init(partition: Partition, filesystem: FilesystemInfo, mountPoint: String, readOnly: Bool = false,
                fromFstab: Bool = true, fatOptions: FATMountOptions = FATMountOptions(), subvolume: BtrfsSubvolume? = nil) {
        self.partition = partition
        self.filesystem = filesystem
        self.mountPoint = mountPoint
        self.readOnly = readOnly
        self.fromFstab = fromFstab
        self.fatOptions = fatOptions
        self.subvolume = subvolume
    }

    /// Path components of the mount point ("/boot/firmware" -> ["boot", "firmware"]).
    public var components: [String] { mountPoint.split(separator: "/").map(String.init) }
}

/// Which of the image's partitions appear where, from the root's fstab (see `resolve`).
public struct PartitionMountPlan: Sendable {
    public var mounts: [PartitionMount] = []
    /// fstab entries not used, with the reason (for one log line each).
    public var skipped: [(entry: String, reason: String)] = []
}

public enum PartitionMounts {
    /// Resolves fstab's entries to the image's partitions: PARTUUID, UUID, LABEL, PARTLABEL or a device path
    /// (its number). Skipped: swap, noauto, `/`, entries naming nothing in the image or the root partition (on
    /// btrfs: the root's subvolume; another subvolume of it is shown, `rootSubvolume` being the root's),
    /// filesystems that are neither FAT nor ext2/3/4, xfs, btrfs, a second entry for a partition (btrfs: for
    /// a subvolume) or a path, and paths below a FAT mount. Then, when no entry names a FAT partition and the image has exactly one, it goes
    /// to /boot/firmware if the root has that as an empty directory, else to /boot if that is one.
    /// `fstab` nil: the root has none (only the fallback applies). Mounts come parents first.
    public static func resolve(fstab: [FstabEntry]?, table: PartitionTable, root: Partition,
                               volumes: [LogicalVolume] = [], rootSubvolume: BtrfsSubvolume? = nil,
                               slot: ABSlot = .a, probe: (Partition) -> FilesystemInfo?,
                               isEmptyDirectory: (String) -> Bool) -> PartitionMountPlan {
        var plan = PartitionMountPlan()
        let candidates = table.partitions.filter { !$0.isExtendedContainer } + volumes.compactMap(\.region)
        var probed: [Int: FilesystemInfo?] = [:]
        func fs(_ p: Partition) -> FilesystemInfo? {
            if let known = probed[p.number] { return known }
            let info = probe(p)
            probed[p.number] = info
            return info
        }
        for entry in fstab ?? [] {
            let line = "\(entry.source) \(entry.mountPoint) \(entry.type)"
            if entry.isSwap { plan.skipped.append((line, "swap")); continue }
            if entry.isNoauto { plan.skipped.append((line, "noauto")); continue }
            guard let path = normalise(entry.mountPoint) else {
                plan.skipped.append((line, "mount point is not a plain absolute path")); continue
            }
            if path == "/" { continue }  // the root is the sandbox itself
            if case .logicalVolume(let group, let name) = entry.spec,
               case .failure(let error)? = volumes.first(where: { $0.group == group && $0.name == name })?.mapping {
                plan.skipped.append((line, error.description)); continue
            }
            guard let partition = entry.spec == .root ? root : find(entry.spec, in: candidates, volumes: volumes, slot: slot, fs: fs) else {
                plan.skipped.append((line, "names no partition of the image")); continue
            }
            guard let info = fs(partition), info.type == .vfat || info.isLinuxRoot || info.type.isReadOnly else {
                if partition.number == root.number { plan.skipped.append((line, "the root partition")); continue }
                plan.skipped.append((line, "partition \(partition.number) holds \(fs(partition)?.type.rawValue ?? "no known filesystem")"))
                continue
            }
            var subvolume: BtrfsSubvolume?
            if info.type == .btrfs {
                switch BtrfsSubvolume.from(options: entry.options) {
                case .success(let named): subvolume = named
                case .failure(let error): plan.skipped.append((line, error.description)); continue
                }
            }
            if partition.number == root.number, info.type != .btrfs || subvolume == rootSubvolume {
                plan.skipped.append((line, "the root partition")); continue
            }
            if let reason = conflict(path, partition, subvolume, plan.mounts) { plan.skipped.append((line, reason)); continue }
            var fatOptions = FATMountOptions()
            if info.type == .vfat {
                switch FATMountOptions.parse(entry.options) {
                case .success(let options): fatOptions = options
                case .failure(let reason): plan.skipped.append((line, reason.description)); continue
                }
            }
            plan.mounts.append(PartitionMount(partition: partition, filesystem: info, mountPoint: path,
                                              readOnly: entry.isReadOnly, fatOptions: fatOptions, subvolume: subvolume))
        }
        if !plan.mounts.contains(where: { $0.filesystem.type == .vfat }) {
            let fats = candidates.filter { $0.number != root.number && fs($0)?.type == .vfat }
            if fats.count == 1, let fat = fats.first, let info = fs(fat),
               !plan.mounts.contains(where: { $0.partition.number == fat.number }),
               let path = ["/boot/firmware", "/boot"].first(where: isEmptyDirectory),
               conflict(path, fat, nil, plan.mounts) == nil {
                plan.mounts.append(PartitionMount(partition: fat, filesystem: info, mountPoint: path, fromFstab: false))
            }
        }
        plan.mounts.sort { $0.components.count != $1.components.count ? $0.components.count < $1.components.count
                                                                       : $0.mountPoint < $1.mountPoint }
        return plan
    }

    /// "/boot//firmware/" -> "/boot/firmware"; nil for relative paths and "." or ".." components.
    public static func normalise(_ path: String) -> String? {
        guard path.hasPrefix("/") else { return nil }
        let parts = path.split(separator: "/")
        guard !parts.contains(where: { $0 == "." || $0 == ".." }) else { return nil }
        return "/" + parts.joined(separator: "/")
    }

    private static func conflict(_ path: String, _ partition: Partition, _ subvolume: BtrfsSubvolume?,
                                 _ mounts: [PartitionMount]) -> String? {
        for m in mounts {
            if m.partition.number == partition.number, m.subvolume == subvolume || m.filesystem.type != .btrfs {
                return "partition \(partition.number)\(subvolume.map { " (\($0))" } ?? "") is already at \(m.mountPoint)"
            }
            if m.mountPoint == path { return "\(path) already holds partition \(m.partition.number)" }
            if m.filesystem.type == .vfat, path.hasPrefix(m.mountPoint + "/") { return "inside the FAT partition at \(m.mountPoint)" }
        }
        return nil
    }

    static func find(_ spec: FstabSource, in partitions: [Partition], volumes: [LogicalVolume] = [], slot: ABSlot = .a,
                     fs: (Partition) -> FilesystemInfo?) -> Partition? {
        switch spec {
        case .slot(let name, let active):
            return slot.partition(name, active: active, in: partitions)
        case .logicalVolume(let group, let name):
            return volumes.first { $0.group == group && $0.name == name }?.region
        case .partUUID(let id):
            return partitions.first { $0.partUUID?.lowercased() == id.lowercased() }
        case .partLabel(let name):
            return partitions.first { $0.gptName == name }
        case .partitionNumber(let n):
            return partitions.first { $0.number == n }
        case .uuid(let id):
            return partitions.first { fs($0)?.uuid?.lowercased() == id.lowercased() }
        case .label(let name):
            // FAT labels are case-insensitive (and often stored upper case); the others are exact.
            return partitions.first { p in
                guard let info = fs(p), let label = info.label else { return false }
                return label == name || info.type == .vfat && label.uppercased() == name.uppercased()
            }
        case .other, .root:
            return nil
        }
    }
}
