/// The boot sector's BIOS parameter block, validated (fatgen103 + what Linux fat_fill_super checks),
/// and the volume layout derived from it. Everything later relies on these bounds.
struct FATBootSector: Equatable {
    var type: FATType
    var bytesPerSector: Int
    var sectorsPerCluster: Int
    var reservedSectors: Int
    var fatCount: Int
    var rootEntryCount: Int
    var totalSectors: UInt64
    var sectorsPerFAT: Int
    /// FAT32: the root directory's first cluster, the FSInfo sector (nil when absent), the active FAT
    /// when mirroring is off.
    var rootCluster: UInt32
    var fsInfoSector: Int?
    var activeFAT: Int
    /// Byte offset of the state byte holding Linux's dirty flag (bit 0), and its value at open.
    var stateOffset: Int
    var state: UInt8
    var serial: UInt32?
    var label: String?

    // Derived layout.
    var clusterSize: Int { bytesPerSector * sectorsPerCluster }
    var fatOffset: UInt64 { UInt64(reservedSectors) * UInt64(bytesPerSector) }
    var fatBytes: Int { sectorsPerFAT * bytesPerSector }
    var rootDirOffset: UInt64 { fatOffset + UInt64(fatCount) * UInt64(fatBytes) }
    var rootDirSectors: Int { (rootEntryCount * 32 + bytesPerSector - 1) / bytesPerSector }
    var dataOffset: UInt64 { rootDirOffset + UInt64(rootDirSectors) * UInt64(bytesPerSector) }
    var clusterCount: Int

    /// Largest FAT the volume keeps in memory (a FAT32 volume of 64 Mi clusters).
    static let maxFATBytes = 256 << 20

    init(_ bs: [UInt8], deviceSize: UInt64) throws(FATError) {
        guard bs.count >= 512 else { throw .badBootSector("shorter than 512 bytes") }
        guard bs[0] == 0xEB || bs[0] == 0xE9 else { throw .badBootSector("no x86 jump at byte 0") }
        guard bs[510] == 0x55, bs[511] == 0xAA else { throw .badBootSector("no 0x55AA signature") }
        bytesPerSector = Int(bs.le16(11))
        guard [512, 1024, 2048, 4096].contains(bytesPerSector) else {
            throw .badBootSector("\(bytesPerSector) bytes per sector (512, 1024, 2048 or 4096)")
        }
        sectorsPerCluster = Int(bs[13])
        guard sectorsPerCluster >= 1, sectorsPerCluster <= 128, sectorsPerCluster & (sectorsPerCluster - 1) == 0 else {
            throw .badBootSector("\(sectorsPerCluster) sectors per cluster (a power of two, 1-128)")
        }
        reservedSectors = Int(bs.le16(14))
        guard reservedSectors >= 1 else { throw .badBootSector("no reserved sector") }
        fatCount = Int(bs[16])
        guard (1...4).contains(fatCount) else { throw .badBootSector("\(fatCount) FAT copies (1-4)") }
        rootEntryCount = Int(bs.le16(17))
        let media = bs[21]
        guard media == 0xF0 || media >= 0xF8 else { throw .badBootSector("media byte 0x\(String(media, radix: 16))") }
        let total16 = UInt64(bs.le16(19)), total32 = UInt64(bs.le32(32))
        totalSectors = total16 != 0 ? total16 : total32
        guard totalSectors > 0 else { throw .badBootSector("0 sectors") }
        guard totalSectors * UInt64(bytesPerSector) <= deviceSize else {
            throw .badBootSector("\(totalSectors) sectors of \(bytesPerSector) bytes, larger than the partition (\(deviceSize) bytes)")
        }
        let fat16Size = Int(bs.le16(22))
        // FAT32 layout: no 16-bit FAT size, no fixed root (as Linux and dosfstools decide it; mkfs.fat
        // makes such volumes below fatgen's 65525 clusters too).
        let fat32Layout = fat16Size == 0
        sectorsPerFAT = fat32Layout ? Int(bs.le32(36)) : fat16Size
        guard sectorsPerFAT > 0 else { throw .badBootSector("FAT size 0") }
        guard sectorsPerFAT * bytesPerSector <= Self.maxFATBytes else {
            throw .badBootSector("FAT of \(sectorsPerFAT) sectors is larger than \(Self.maxFATBytes >> 20) MiB")
        }
        if fat32Layout {
            guard rootEntryCount == 0 else { throw .badBootSector("FAT32 layout with \(rootEntryCount) fixed root entries") }
        } else {
            guard rootEntryCount > 0, (rootEntryCount * 32) % bytesPerSector == 0 else {
                throw .badBootSector("\(rootEntryCount) root entries (not a whole number of sectors)")
            }
        }
        type = .fat32
        rootCluster = 0
        fsInfoSector = nil
        activeFAT = 0
        clusterCount = 0
        stateOffset = fat32Layout ? 65 : 37
        state = bs[stateOffset]

        let dataStart = (rootDirOffset + UInt64(rootDirSectors) * UInt64(bytesPerSector)) / UInt64(bytesPerSector)
        guard dataStart < totalSectors else { throw .badBootSector("FATs and root directory fill the whole volume") }
        let count = (totalSectors - dataStart) / UInt64(sectorsPerCluster)
        // fatgen103: the type follows from the cluster count.
        if fat32Layout {
            type = .fat32
        } else if count < 4085 {
            type = .fat12
        } else if count < 65525 {
            type = .fat16
        } else {
            throw .badBootSector("\(count) clusters need FAT32, but the BPB has a FAT12/16 layout")
        }
        guard count >= 1 else { throw .badBootSector("no data cluster") }
        guard count <= 0x0FFF_FFF4 else { throw .badBootSector("\(count) clusters, more than FAT32 addresses") }
        // The FAT must hold an entry for every cluster (+2 reserved): else the tail is unreachable.
        let bits = type == .fat12 ? 12 : type == .fat16 ? 16 : 32
        let entries = UInt64(sectorsPerFAT) * UInt64(bytesPerSector) * 8 / UInt64(bits)
        clusterCount = Int(min(count, entries >= 2 ? entries - 2 : 0))
        guard clusterCount >= 1 else { throw .badBootSector("FAT too small for any cluster") }

        let ebpb = fat32Layout ? 64 : 36
        if bs[ebpb + 2] == 0x29 {
            serial = bs.le32(ebpb + 3)
            let raw = bs[(ebpb + 7)..<(ebpb + 18)]
            let text = String(decoding: raw.map { $0 < 0x20 || $0 > 0x7E ? UInt8(ascii: "_") : $0 }, as: UTF8.self)
            let trimmed = String(text.reversed().drop { $0 == " " }.reversed())
            label = trimmed.isEmpty || trimmed == "NO NAME" ? nil : trimmed
        }
        if fat32Layout {
            let flags = bs.le16(40)
            if flags & 0x80 != 0 {
                activeFAT = Int(flags & 0x0F)
                guard activeFAT < fatCount else { throw .badBootSector("active FAT \(activeFAT) of \(fatCount)") }
            }
            guard bs.le16(42) == 0 else { throw .badBootSector("FAT32 version \(bs.le16(42)) (only 0.0)") }
            rootCluster = bs.le32(44)
            guard rootCluster >= 2, Int(rootCluster) <= clusterCount + 1 else {
                throw .badBootSector("root cluster \(rootCluster) outside 2...\(clusterCount + 1)")
            }
            let info = Int(bs.le16(48))
            if info != 0, info != 0xFFFF, info < reservedSectors { fsInfoSector = info }
        }
    }

    /// Byte offset of a data cluster (the caller checked 2...clusterCount+1).
    func offset(ofCluster cluster: UInt32) -> UInt64 {
        dataOffset + UInt64(cluster - 2) * UInt64(clusterSize)
    }
}
