/// The partition chosen as the sandbox root, with its filesystem and the table it came from.
public struct RootPartition: Sendable {
    public let partition: Partition
    public let filesystem: FilesystemInfo
    public let table: PartitionTable
    /// Why this one (RootChoice's one line); empty for a partition that is not an image's root.
    public let reason: String
    /// btrfs: the subvolume mounted as the root; nil: the filesystem's default subvolume.
    public var subvolume: BtrfsSubvolume?
    /// An A/B image's active slot (fstab's `/dev/disk/by-slot/active/...`).
    public var slot: ABSlot = .a

    public init(partition: Partition, filesystem: FilesystemInfo, table: PartitionTable, reason: String = "",
                subvolume: BtrfsSubvolume? = nil) {
        self.partition = partition
        self.filesystem = filesystem
        self.table = table
        self.reason = reason
        self.subvolume = filesystem.type == .btrfs ? subvolume : nil
    }

    /// The options that mount it as the root (its subvolume), besides the caller's own.
    public var mountOptions: [String] { subvolume.map { [$0.mountOption] } ?? [] }
}

public enum ImageLayout {
    /// The root from the partition table alone (no boot configuration, no LVM): `partitionNumber`, else the
    /// largest candidate (RootChoice). The daemon's own choice also reads the boot files (Sandbox's RootFinder).
    public static func findRoot(in source: some ByteSource,
                                partitionNumber: Int? = nil) throws(DiskImageError) -> RootPartition {
        let table = try PartitionTable.read(source)
        var inputs = RootChoice.Inputs(table: table) { p in
            FilesystemProbe.probe(source, partition: p)
        }
        inputs.override = partitionNumber
        return try RootChoice.choose(inputs).root
    }
}
