/// The partition chosen as the sandbox root, with its filesystem and the table it came from.
public struct RootPartition: Sendable {
    public let partition: Partition
    public let filesystem: FilesystemInfo
    public let table: PartitionTable

    public init(partition: Partition, filesystem: FilesystemInfo, table: PartitionTable) {
        self.partition = partition
        self.filesystem = filesystem
        self.table = table
    }
}

public enum ImageLayout {
    /// Picks the root: with `partitionNumber` that partition (must hold a Linux fs); else the largest partition
    /// holding ext2/3/4, xfs or btrfs (ties: the lower number); a table-less image that is itself a Linux fs -> number 0.
    public static func findRoot(in source: some ByteSource,
                                partitionNumber: Int? = nil) throws(DiskImageError) -> RootPartition {
        let table = try PartitionTable.read(source)

        if let wanted = partitionNumber {
            guard let p = table.partitions.first(where: { $0.number == wanted }) else {
                throw .noSuchPartition(number: wanted, available: table.partitions.map(\.number))
            }
            let fs = p.isExtendedContainer ? nil : probe(source, p)
            guard let fs, fs.isLinuxRoot else {
                throw .notLinuxFilesystem(partition: wanted, found: p.isExtendedContainer ? "extended partition" : fs?.type.rawValue)
            }
            return RootPartition(partition: p, filesystem: fs, table: table)
        }

        var best: RootPartition?
        for p in table.partitions where !p.isExtendedContainer {
            guard let fs = probe(source, p), fs.isLinuxRoot else { continue }
            // Partitions are in number order, so a strict `>` keeps the lower number on a tie.
            if best == nil || p.sizeBytes > best!.partition.sizeBytes {
                best = RootPartition(partition: p, filesystem: fs, table: table)
            }
        }
        guard let best else {
            throw .noLinuxPartition(scheme: table.scheme, partitionCount: table.partitions.count)
        }
        return best
    }

    private static func probe(_ source: some ByteSource, _ p: Partition) -> FilesystemInfo? {
        FilesystemProbe.probe(source, offset: p.startByte, length: p.sizeBytes)
    }
}
