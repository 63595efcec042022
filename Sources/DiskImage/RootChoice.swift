/// Which partition (or logical volume) an image boots as its root, and why, in this order: an override;
/// the `root=` its boot configuration names; the candidate whose own /etc/fstab mounts itself at `/`; the
/// largest candidate. Candidates hold ext2/3/4, xfs, btrfs, squashfs or erofs.
public enum RootChoice {
    public struct Inputs {
        public var table: PartitionTable
        /// Logical volumes of the image's LVM2 volume groups (LVM.volumes).
        public var volumes: [LogicalVolume] = []
        /// `root=` values found in the boot configuration, most authoritative first.
        public var kernelRoots: [KernelRoot] = []
        /// A candidate's /etc/fstab, nil when it has none or it cannot be read here. For btrfs: the one of the
        /// default subvolume, else of the top-level subvolume whose fstab mounts it at `/`.
        public var fstab: (Partition) -> [FstabEntry]? = { _ in nil }
        public var probe: (Partition) -> FilesystemInfo?
        /// `--partition N` for this image.
        public var override: Int?
        /// An A/B image's active slot (autoboot.txt), for `/dev/disk/by-slot/active/...`.
        public var slot: ABSlot = .a
        /// A squashfs stored as a file at the top of a FAT partition and named as LibreELEC's init names its
        /// OS (`SYSTEM`): the image boots that file, so no partition is the root by the largest rule.
        public var systemFile: (partition: Int, name: String)?

        public init(table: PartitionTable, probe: @escaping (Partition) -> FilesystemInfo?) {
            self.table = table
            self.probe = probe
        }
    }

    public struct Decision: Sendable {
        public let root: RootPartition
        /// One line: "root=PARTUUID=6c586e13-02 in cmdline.txt of partition 1".
        public let reason: String
        /// Sources looked at and passed over, one line each (for a debug log).
        public let passedOver: [String]
    }

    public static func choose(_ inputs: Inputs) throws(DiskImageError) -> Decision {
        let table = inputs.table
        let regions = table.partitions.filter { !$0.isExtendedContainer } + inputs.volumes.compactMap(\.region)
        var probed: [Int: FilesystemInfo?] = [:]
        func fs(_ p: Partition) -> FilesystemInfo? {
            if let known = probed[p.number] { return known }
            let info = inputs.probe(p)
            probed[p.number] = info
            return info
        }
        func decision(_ p: Partition, _ reason: String, _ passed: [String], _ kernelRoot: KernelRoot? = nil) -> Decision? {
            guard let info = fs(p), canBeRoot(info) else { return nil }
            var passed = passed
            let subvolume = info.type == .btrfs ? rootSubvolume(p, kernel: kernelRoot, inputs, &passed) : nil
            var root = RootPartition(partition: p, filesystem: info, table: table, reason: reason, subvolume: subvolume)
            root.slot = inputs.slot
            return Decision(root: root, reason: reason, passedOver: passed)
        }

        if let wanted = inputs.override {
            guard let p = regions.first(where: { $0.number == wanted })
                    ?? table.partitions.first(where: { $0.number == wanted }) else {
                throw .noSuchPartition(number: wanted, available: regions.map(\.number))
            }
            if let chosen = decision(p, "--partition \(wanted)", []) { return chosen }
            throw .notLinuxFilesystem(partition: wanted,
                                      found: p.isExtendedContainer ? "extended partition" : fs(p)?.type.rawValue)
        }

        var passed: [String] = []
        for kernelRoot in inputs.kernelRoots {
            let said = "root=\(kernelRoot.value) in \(kernelRoot.file)"
            switch try resolve(kernelRoot.spec, regions: regions, volumes: inputs.volumes, slot: inputs.slot, fs: fs) {
            case .none:
                passed.append("\(said) names no partition of the image")
            case .some(let (p, note)):
                if let chosen = decision(p, said + (note.map { " (\($0))" } ?? ""), passed, kernelRoot) {
                    return chosen
                }
                passed.append("\(said) names partition \(p.number), which holds \(fs(p)?.type.rawValue ?? "no known filesystem")")
            }
        }

        for p in regions {
            guard let info = fs(p), canBeRoot(info), let entries = inputs.fstab(p) else { continue }
            let itself = entries.first { e in
                guard PartitionMounts.normalise(e.mountPoint) == "/" else { return false }
                if e.spec == .root { return true }
                return (try? resolve(e.spec, regions: regions, volumes: inputs.volumes, slot: inputs.slot, fs: fs))??.0.number == p.number
            }
            if let itself {
                let slot = if case .slot = itself.spec { " (\(itself.source): \(inputs.slot.reason))" } else { "" }
                guard let chosen = decision(p, "its /etc/fstab mounts partition \(p.number) at /" + slot, passed) else { continue }
                return chosen
            }
        }

        var best: Partition?
        for p in regions {
            guard let info = fs(p), canBeRoot(info) else { continue }
            // Regions are in number order, so a strict `>` keeps the lower number on a tie.
            if best == nil || p.sizeBytes > best!.sizeBytes { best = p }
        }
        if let file = inputs.systemFile {
            throw .rootIsAFile(partition: file.partition, file: file.name, largest: best?.number)
        }
        guard let best, let chosen = decision(best, "the largest partition with a Linux filesystem", passed) else {
            throw .noLinuxPartition(scheme: table.scheme, partitionCount: table.partitions.count)
        }
        return chosen
    }

    /// A btrfs root's subvolume: the kernel command line's `rootflags=subvol=` or `subvolid=`, else the
    /// `subvol=`/`subvolid=` of its fstab's `/` entry, else nil (the filesystem's default subvolume).
    static func rootSubvolume(_ p: Partition, kernel: KernelRoot?, _ inputs: Inputs, _ passed: inout [String]) -> BtrfsSubvolume? {
        if let kernel {
            switch kernel.subvolume {
            case .success(let subvolume?): return subvolume
            case .success(nil): break
            case .failure(let error): passed.append("rootflags: \(error)")
            }
        }
        guard let entry = inputs.fstab(p)?.last(where: { PartitionMounts.normalise($0.mountPoint) == "/" }) else { return nil }
        switch BtrfsSubvolume.from(options: entry.options) {
        case .success(let subvolume): return subvolume
        case .failure(let error):
            passed.append("/etc/fstab's / entry: \(error)")
            return nil
        }
    }

    /// ext2/3/4, xfs, btrfs, and the read-only roots of OpenWrt, HAOS and rpi-image-gen (squashfs, erofs).
    public static func canBeRoot(_ info: FilesystemInfo) -> Bool {
        info.isLinuxRoot || info.type.isReadOnly
    }

    /// The region a spec names, with a note when a choice among several was made; a logical volume that
    /// cannot be served as a region throws its reason.
    static func resolve(_ spec: FstabSource, regions: [Partition], volumes: [LogicalVolume], slot: ABSlot = .a,
                        fs: (Partition) -> FilesystemInfo?) throws(DiskImageError) -> (Partition, String?)? {
        let matches: [Partition]
        let what: String
        switch spec {
        case .logicalVolume(let group, let volume):
            guard let lv = volumes.first(where: { $0.group == group && $0.name == volume }) else { return nil }
            switch lv.mapping {
            case .success(let region): return (region, nil)
            case .failure(let error): throw .logicalVolume(group: group, volume: volume, error)
            }
        case .label(let name):
            matches = regions.filter { p in
                guard let info = fs(p), let label = info.label else { return false }
                return label == name || info.type == .vfat && label.uppercased() == name.uppercased()
            }
            what = "label \(name)"
        case .partLabel(let name):
            matches = regions.filter { $0.gptName == name }
            what = "partition label \(name)"
        case .uuid(let id):
            // A/B images cloned from one filesystem carry its UUID twice.
            matches = regions.filter { fs($0)?.uuid?.lowercased() == id.lowercased() }
            what = "UUID \(id)"
        default:
            return PartitionMounts.find(spec, in: regions, slot: slot, fs: fs).map { ($0, nil) }
        }
        guard let first = matches.first else { return nil }
        guard matches.count > 1 else { return (first, nil) }
        let numbers = matches.map { String($0.number) }.joined(separator: ", ")
        return (first, "\(what) is on partitions \(numbers): slot A, the lowest-numbered")
    }
}
