extension PartitionTable {
    /// Reads the partition table: MBR (with logical partitions), GPT (via a protective MBR), or none
    /// when the image is itself a filesystem. Sector size is 512.
    public static func read(_ source: some ByteSource) throws(DiskImageError) -> PartitionTable {
        let size = source.size
        guard size > 0 else { throw .emptyImage }
        guard size % sectorSize == 0 else { throw .sizeNotSectorMultiple(size: size) }

        let sector0 = try source.read(at: 0, count: Int(sectorSize))
        let hasSignature = sector0.u8(510) == 0x55 && sector0.u8(511) == 0xAA

        if hasSignature {
            let entries = MBR.primaryEntries(sector0)
            if entries.contains(where: { $0.type == MBR.protectiveType && $0.sectorCount != 0 }) {
                return try gptBehind(entries, source: source, sector0: sector0)
            }
            // A FAT boot sector also ends in 55AA; its bytes 446-509 are boot code, not entries.
            let plausible = MBR.isPlausible(entries)
            if !plausible || entries.allSatisfy(\.isEmpty),
               let fs = FilesystemProbe.probe(source, offset: 0, length: size) {
                return wholeDisk(fs, size: size)
            }
            if plausible {
                return try MBR.read(source, sector0: sector0)
            }
            // 55AA but garbage entries and no filesystem: nothing we can use.
            return PartitionTable(scheme: .none, partitions: [], diskSize: size)
        }

        if let fs = FilesystemProbe.probe(source, offset: 0, length: size) {
            return wholeDisk(fs, size: size)
        }
        // GPT without a protective MBR (wiped sector 0): still honour it.
        if size >= 2 * sectorSize, GPT.hasSignature(try source.read(at: sectorSize, count: 8)) {
            return try GPT.read(source)
        }
        return PartitionTable(scheme: .none, partitions: [], diskSize: size)
    }

    /// A protective MBR leads to the GPT. A hybrid one (HAOS on the Pi 3/4: 0xEE plus real entries for
    /// the firmware) also uses the GPT when it is valid, and falls back to its MBR entries when not, as Linux does.
    private static func gptBehind(_ entries: [MBR.Entry], source: some ByteSource,
                                  sector0: [UInt8]) throws(DiskImageError) -> PartitionTable {
        let hybrid = entries.contains { !$0.isEmpty && $0.type != MBR.protectiveType }
        guard hybrid else { return try GPT.read(source) }
        do {
            return try GPT.read(source).adding(notice: "hybrid MBR: its GPT is used")
        } catch {
            var withoutProtective = sector0
            for (i, e) in entries.enumerated() where e.type == MBR.protectiveType {
                for b in 0..<16 { withoutProtective[446 + 16 * i + b] = 0 }
            }
            return try MBR.read(source, sector0: withoutProtective)
                .adding(notice: "hybrid MBR without a usable GPT (\(error)); its MBR entries are used")
        }
    }

    private static func wholeDisk(_ fs: FilesystemInfo, size: UInt64) -> PartitionTable {
        let p = Partition(number: 0, startByte: 0, sizeBytes: size, typeName: "Whole disk (\(fs.type.rawValue))")
        return PartitionTable(scheme: .none, partitions: [p], diskSize: size)
    }

    /// Every partition must lie inside the disk and no two may overlap (an extended container
    /// holds its logicals, so that pair is allowed).
    static func checkOverlaps(_ parts: [Partition]) throws(DiskImageError) {
        for i in parts.indices {
            for j in parts.indices where j > i {
                let a = parts[i], b = parts[j]
                if a.isExtendedContainer && b.number >= 5 || b.isExtendedContainer && a.number >= 5 { continue }
                if a.startByte < b.startByte + b.sizeBytes && b.startByte < a.startByte + a.sizeBytes {
                    throw .overlappingPartitions(first: a.number, second: b.number)
                }
            }
        }
    }
}
