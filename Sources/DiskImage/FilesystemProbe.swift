/// Recognises a filesystem from its superblock. Never throws: anything unreadable or implausible
/// is simply "not recognised".
public enum FilesystemProbe {
    /// Looks at `length` bytes of `source` from `offset` (a partition); reads nothing outside them.
    public static func probe(_ source: some ByteSource, offset: UInt64, length: UInt64) -> FilesystemInfo? {
        let region = Region(source: source, offset: offset, length: length)
        // Specific magic numbers first; FAT's 55AA-plus-BPB is the weakest test, so it comes last.
        return Ext.probe(region) ?? XFS.probe(region) ?? Btrfs.probe(region) ?? Squashfs.probe(region)
            ?? EROFS.probe(region) ?? Swap.probe(region) ?? FAT.probe(region)
    }

    /// Looks at `partition` of `image`, in whatever ranges of the image it lies.
    public static func probe(_ image: some ByteSource, partition: Partition) -> FilesystemInfo? {
        partition.isContiguous ? probe(image, offset: partition.startByte, length: partition.sizeBytes)
            : probe(PartitionBytes(image, partition), offset: 0, length: partition.sizeBytes)
    }
}

/// A window onto a source: reads outside it, or failing reads, return nil.
struct Region<Source: ByteSource> {
    let source: Source
    let offset: UInt64
    let length: UInt64

    func read(_ at: UInt64, _ count: Int) -> [UInt8]? {
        let (end, overflow) = at.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= length else { return nil }
        let (absolute, overflow2) = offset.addingReportingOverflow(at)
        guard !overflow2 else { return nil }
        return try? source.read(at: absolute, count: count)
    }
}

/// `a * b`, or nil on overflow (sizes from hostile superblocks).
func checkedProduct(_ a: UInt64, _ b: UInt64) -> UInt64? {
    let (v, overflow) = a.multipliedReportingOverflow(by: b)
    return overflow ? nil : v
}
