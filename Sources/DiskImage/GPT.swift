/// The GUID partition table: primary header at LBA 1, backup at the last LBA.
enum GPT {
    /// The entry array is capped: a hostile header could otherwise make us read gigabytes.
    static let maxEntryArrayBytes = 128 * 1024
    static let maxEntries: UInt32 = 1024

    static func hasSignature(_ bytes: [UInt8]) -> Bool { bytes.matches("EFI PART", at: 0) }

    struct Header {
        var myLBA: UInt64
        var alternateLBA: UInt64
        var entriesLBA: UInt64
        var entryCount: UInt32
        var entrySize: UInt32
        var entriesCRC: UInt32
    }

    /// Why one header (with its entry array) could not be used. Problems found after the header's
    /// own CRC checked out (or I/O errors) are reported as their specific error when no copy is usable.
    enum Problem: Error {
        case header(String)
        case specific(DiskImageError)

        var text: String {
            switch self {
            case .header(let s): return s
            case .specific(let e): return e.description
            }
        }
    }

    static func read(_ source: some ByteSource) throws(DiskImageError) -> PartitionTable {
        let diskSectors = source.size / sectorSize
        guard diskSectors >= 2 else { throw .gptHeadersInvalid(primary: "image too small", backup: "image too small") }
        let lastLBA = diskSectors - 1

        let primary = load(source, lba: 1, diskSectors: diskSectors)
        if case .success(let (h, entries)) = primary {
            let result = try table(h, entries, source: source)
            // Linux and parted accept a sound primary alone; ptgen (OpenWrt) writes no backup at all.
            if let problem = backupProblem(source, alternateLBA: h.alternateLBA, diskSectors: diskSectors) {
                return result.adding(notice: "GPT backup header unusable (\(problem)); the primary is used")
            }
            return result
        }
        // Backup: where the primary says (if its header was sound), else the last sector.
        var backupLBA = lastLBA
        if case .failure(.specific) = primary, let h = try? header(source, lba: 1, diskSectors: diskSectors).get() {
            backupLBA = h.alternateLBA
        }
        var backup = load(source, lba: backupLBA, diskSectors: diskSectors)
        if case .failure = backup, backupLBA != lastLBA {
            backup = load(source, lba: lastLBA, diskSectors: diskSectors)
        }
        if case .success(let (h, entries)) = backup {
            return try table(h, entries, source: source)
        }
        switch (primary, backup) {
        case (.failure(.specific(let e)), _), (_, .failure(.specific(let e))):
            throw e
        case (.failure(let p), .failure(let b)):
            throw .gptHeadersInvalid(primary: p.text, backup: b.text)
        default:
            throw .gptHeadersInvalid(primary: "unusable", backup: "unusable")  // not reached: both failed
        }
    }

    /// Why the backup copy (where the primary says, else the last sector) is unusable; nil when it is sound.
    private static func backupProblem(_ source: some ByteSource, alternateLBA: UInt64, diskSectors: UInt64) -> String? {
        var backup = load(source, lba: alternateLBA, diskSectors: diskSectors)
        if case .failure = backup, alternateLBA != diskSectors - 1 {
            backup = load(source, lba: diskSectors - 1, diskSectors: diskSectors)
        }
        if case .failure(let problem) = backup { return problem.text }
        return nil
    }

    /// A header plus its validated entry array, or the problem that makes it unusable.
    private static func load(_ source: some ByteSource, lba: UInt64,
                             diskSectors: UInt64) -> Result<(Header, [UInt8]), Problem> {
        let h: Header
        switch header(source, lba: lba, diskSectors: diskSectors) {
        case .success(let v): h = v
        case .failure(let p): return .failure(p)
        }
        guard h.entrySize >= 128, h.entrySize % 8 == 0 else { return .failure(.specific(.gptBadEntrySize(h.entrySize))) }
        let bytes = UInt64(h.entryCount) * UInt64(h.entrySize)
        guard h.entryCount <= maxEntries, bytes <= UInt64(maxEntryArrayBytes) else {
            return .failure(.specific(.gptTooManyEntries(count: h.entryCount, entrySize: h.entrySize,
                                                      limitBytes: maxEntryArrayBytes)))
        }
        let arraySectors = (bytes + sectorSize - 1) / sectorSize
        guard h.entriesLBA >= 1, h.entriesLBA < diskSectors, arraySectors <= diskSectors - h.entriesLBA else {
            return .failure(.specific(.gptEntryArrayBeyondEnd(lba: h.entriesLBA, bytes: bytes, diskSectors: diskSectors)))
        }
        let array: [UInt8]
        do {
            array = try source.read(at: h.entriesLBA * sectorSize, count: Int(bytes))
        } catch {
            return .failure(.specific(error))
        }
        let crc = CRC32.checksum(array)
        guard crc == h.entriesCRC else {
            return .failure(.specific(.gptEntryArrayCRCMismatch(stored: h.entriesCRC, computed: crc)))
        }
        return .success((h, array))
    }

    private static func header(_ source: some ByteSource, lba: UInt64,
                               diskSectors: UInt64) -> Result<Header, Problem> {
        guard lba >= 1, lba < diskSectors else {
            return .failure(.header("header sector \(lba) is outside the image (\(diskSectors) sectors)"))
        }
        let sector: [UInt8]
        do {
            sector = try source.read(at: lba * sectorSize, count: Int(sectorSize))
        } catch {
            return .failure(.specific(error))
        }
        guard hasSignature(sector) else { return .failure(.header("no \"EFI PART\" signature at sector \(lba)")) }
        let headerSize = Int(sector.le32(12))
        guard headerSize >= 92, headerSize <= Int(sectorSize) else {
            return .failure(.header("header size \(headerSize) at sector \(lba) is not in 92...512"))
        }
        let stored = sector.le32(16)
        var copy = sector.slice(0, headerSize)
        for i in 16..<20 { copy[i] = 0 }  // the CRC is computed with its own field zeroed
        let computed = CRC32.checksum(copy)
        guard stored == computed else {
            return .failure(.header("header CRC32 at sector \(lba) is \(hex32(stored)), computed \(hex32(computed))"))
        }
        let h = Header(myLBA: sector.le64(24), alternateLBA: sector.le64(32), entriesLBA: sector.le64(72),
                       entryCount: sector.le32(80), entrySize: sector.le32(84), entriesCRC: sector.le32(88))
        guard h.myLBA == lba else {
            return .failure(.header("header at sector \(lba) says it is at sector \(h.myLBA)"))
        }
        return .success(h)
    }

    private static func table(_ h: Header, _ array: [UInt8],
                              source: some ByteSource) throws(DiskImageError) -> PartitionTable {
        let diskSectors = source.size / sectorSize
        var parts: [Partition] = []
        let entrySize = Int(h.entrySize)
        for index in 0..<Int(h.entryCount) {
            let e = array.slice(index * entrySize, entrySize)
            let typeBytes = e.slice(0, 16)
            guard typeBytes.contains(where: { $0 != 0 }) else { continue }  // unused entry
            let number = index + 1
            let first = e.le64(32), last = e.le64(40)
            guard last >= first else { throw .gptEntryReversed(number: number, firstLBA: first, lastLBA: last) }
            guard first >= 1, last < diskSectors else {
                let (count, overflow) = (last - first).addingReportingOverflow(1)
                throw .partitionBeyondEnd(number: number, startSector: first, sectorCount: overflow ? .max : count,
                                          diskSectors: diskSectors)
            }
            let guid = mixedEndianGUID(typeBytes)
            parts.append(Partition(number: number, startByte: first * sectorSize,
                                   sizeBytes: (last - first + 1) * sectorSize,
                                   typeName: typeName(guid), gptTypeGUID: guid, gptName: name(e.slice(56, 72)),
                                   partUUID: mixedEndianGUID(e.slice(16, 16))))
        }
        try PartitionTable.checkOverlaps(parts)
        return PartitionTable(scheme: .gpt, partitions: parts, diskSize: source.size)
    }
}
