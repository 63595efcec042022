/// The DOS/MBR partition table with its chain of extended boot records.
enum MBR {
    static let protectiveType: UInt8 = 0xEE
    static let extendedTypes: Set<UInt8> = [0x05, 0x0F, 0x85]
    /// Upper bound on EBRs followed: a hostile chain could otherwise be made arbitrarily long.
    static let maxLogicals = 128

    struct Entry {
        var bootFlag: UInt8
        var type: UInt8
        var startLBA: UInt64
        var sectorCount: UInt64
        var isEmpty: Bool { type == 0 || sectorCount == 0 }
    }

    static func entry(_ sector: [UInt8], _ index: Int) -> Entry {
        let base = 446 + 16 * index
        return Entry(bootFlag: sector.u8(base), type: sector.u8(base + 4),
                     startLBA: UInt64(sector.le32(base + 8)), sectorCount: UInt64(sector.le32(base + 12)))
    }

    static func primaryEntries(_ sector0: [UInt8]) -> [Entry] {
        (0..<4).map { entry(sector0, $0) }
    }

    /// Linux's own test: the boot indicator of every entry is 0x00 or 0x80.
    static func isPlausible(_ entries: [Entry]) -> Bool {
        entries.allSatisfy { $0.bootFlag == 0 || $0.bootFlag == 0x80 }
    }

    static func read(_ source: some ByteSource, sector0: [UInt8]) throws(DiskImageError) -> PartitionTable {
        let diskSectors = source.size / sectorSize
        let signature = sector0.le32(440)
        var parts: [Partition] = []
        var extended: [(start: UInt64, count: UInt64)] = []

        for (i, e) in primaryEntries(sector0).enumerated() where !e.isEmpty {
            let p = try makePartition(number: i + 1, type: e.type, start: e.startLBA, count: e.sectorCount,
                                      diskSectors: diskSectors, signature: signature)
            parts.append(p)
            if extendedTypes.contains(e.type) { extended.append((e.startLBA, e.sectorCount)) }
        }

        var nextNumber = 5
        for ext in extended {
            parts += try logicals(source, extendedStart: ext.start, diskSectors: diskSectors, signature: signature,
                                  nextNumber: &nextNumber)
        }
        try PartitionTable.checkOverlaps(parts)
        return PartitionTable(scheme: .mbr, partitions: parts, diskSize: source.size)
    }

    /// Walks the EBR chain. A logical's start is relative to its own EBR; the link to the next EBR
    /// is relative to the start of the extended partition.
    private static func logicals(_ source: some ByteSource, extendedStart: UInt64, diskSectors: UInt64,
                                 signature: UInt32, nextNumber: inout Int) throws(DiskImageError) -> [Partition] {
        var result: [Partition] = []
        var visited: Set<UInt64> = []
        var ebr = extendedStart
        while true {
            guard visited.insert(ebr).inserted else { throw .extendedChainLoop(sector: ebr) }
            guard visited.count <= maxLogicals else { throw .extendedChainTooLong(limit: maxLogicals) }
            guard ebr < diskSectors else { throw .extendedRecordBeyondEnd(sector: ebr, diskSectors: diskSectors) }
            let sector = try source.read(at: ebr * sectorSize, count: Int(sectorSize))
            // Like Linux: an EBR without the signature ends the chain (e.g. a freshly made empty extended).
            guard sector.u8(510) == 0x55, sector.u8(511) == 0xAA else { break }

            let data = entry(sector, 0)
            if !data.isEmpty {
                result.append(try makePartition(number: nextNumber, type: data.type, start: ebr + data.startLBA,
                                                count: data.sectorCount, diskSectors: diskSectors, signature: signature))
                nextNumber += 1
            }
            let link = entry(sector, 1)
            guard !link.isEmpty, extendedTypes.contains(link.type) else { break }
            ebr = extendedStart + link.startLBA
        }
        return result
    }

    private static func makePartition(number: Int, type: UInt8, start: UInt64, count: UInt64,
                                      diskSectors: UInt64, signature: UInt32) throws(DiskImageError) -> Partition {
        guard start > 0 else { throw .partitionOverlapsTable(number: number, startSector: start) }
        // start and count are 32-bit (plus a 32-bit EBR base): the sum cannot overflow UInt64.
        guard start + count <= diskSectors else {
            throw .partitionBeyondEnd(number: number, startSector: start, sectorCount: count, diskSectors: diskSectors)
        }
        return Partition(number: number, startByte: start * sectorSize, sizeBytes: count * sectorSize,
                         typeName: typeName(type), mbrType: type, partUUID: partUUID(signature: signature, number: number))
    }

    /// blkid's PARTUUID of an MBR partition: `%08x-%02x` of the disk signature (bytes 440-443) and number.
    /// A zero signature gives none (blkid prints none either).
    static func partUUID(signature: UInt32, number: Int) -> String? {
        guard signature != 0 else { return nil }
        let hex = String(signature, radix: 16), n = String(number, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex + "-" + (n.count < 2 ? "0" : "") + n
    }

    static func typeName(_ type: UInt8) -> String {
        let hex = "0x" + hexByte(type)
        return "\(typeNames[type] ?? "Unknown") (\(hex))"
    }

    private static let typeNames: [UInt8: String] = [
        0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "Extended", 0x06: "FAT16", 0x07: "HPFS/NTFS/exFAT",
        0x0b: "W95 FAT32", 0x0c: "W95 FAT32 LBA", 0x0e: "W95 FAT16 LBA", 0x0f: "W95 Extended LBA",
        0x82: "Linux swap", 0x83: "Linux", 0x85: "Linux extended", 0x8e: "Linux LVM",
        0xa5: "FreeBSD", 0xa6: "OpenBSD", 0xa9: "NetBSD", 0xee: "GPT protective", 0xef: "EFI System",
        0xfd: "Linux raid autodetect",
    ]
}
