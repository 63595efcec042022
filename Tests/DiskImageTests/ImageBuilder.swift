@testable import DiskImage

/// Builds disk images in memory, byte by byte, the way partitioning and mkfs tools lay them out.
struct ImageBuilder {
    var bytes: [UInt8]

    init(sectors: Int) { bytes = [UInt8](repeating: 0, count: sectors * 512) }

    var source: ByteArraySource { ByteArraySource(bytes) }
    var sectorCount: UInt64 { UInt64(bytes.count / 512) }

    mutating func put(_ value: UInt64, at offset: Int, width: Int) {
        for i in 0..<width { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }
    mutating func put(_ raw: [UInt8], at offset: Int) {
        bytes.replaceSubrange(offset..<offset + raw.count, with: raw)
    }
    mutating func put(ascii: String, at offset: Int) { put(Array(ascii.utf8), at: offset) }

    // MARK: MBR

    mutating func mbrEntry(sector: UInt64 = 0, index: Int, type: UInt8, start: UInt64, count: UInt64, boot: UInt8 = 0) {
        let base = Int(sector) * 512 + 446 + 16 * index
        bytes[base] = boot
        bytes[base + 4] = type
        put(start, at: base + 8, width: 4)
        put(count, at: base + 12, width: 4)
        signature(sector: sector)
    }

    mutating func signature(sector: UInt64 = 0) {
        bytes[Int(sector) * 512 + 510] = 0x55
        bytes[Int(sector) * 512 + 511] = 0xAA
    }

    // MARK: Filesystems

    struct Ext {
        var logBlockSize: UInt32 = 2
        var blocks: UInt64 = 1000
        var compat: UInt32 = 0x4 | 0x8 | 0x10 | 0x20  // has_journal ext_attr resize_inode dir_index
        var incompat: UInt32 = 0x2 | 0x40 | 0x80 | 0x200  // filetype extent 64bit flex_bg
        var roCompat: UInt32 = 0x1 | 0x2
        var label = "rootfs"
        var uuid: [UInt8] = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]
    }

    mutating func ext(at byte: UInt64, _ e: Ext = Ext()) {
        let sb = Int(byte) + 1024
        put(UInt64(UInt32(truncatingIfNeeded: e.blocks)), at: sb + 4, width: 4)
        put(UInt64(e.logBlockSize), at: sb + 24, width: 4)
        put(0xEF53, at: sb + 56, width: 2)
        put(UInt64(e.compat), at: sb + 92, width: 4)
        put(UInt64(e.incompat), at: sb + 96, width: 4)
        put(UInt64(e.roCompat), at: sb + 100, width: 4)
        put(e.uuid, at: sb + 104)
        put(ascii: e.label, at: sb + 120)
        put(e.blocks >> 32, at: sb + 0x150, width: 4)
    }

    /// A FAT32 boot sector as mkfs.vfat writes it, boot code included (which makes bytes
    /// 446-509 look like garbage partition entries).
    mutating func fat32(at byte: UInt64, sectors: UInt32, label: String = "BOOT       ") {
        let b = Int(byte)
        put([0xEB, 0x58, 0x90], at: b)
        put(ascii: "mkfs.fat", at: b + 3)
        put(512, at: b + 11, width: 2)
        bytes[b + 13] = 1               // sectors per cluster
        put(32, at: b + 14, width: 2)   // reserved sectors
        bytes[b + 16] = 2               // FATs
        bytes[b + 21] = 0xF8            // media
        put(UInt64(sectors), at: b + 32, width: 4)
        bytes[b + 66] = 0x29            // extended boot signature
        put(0xE2FC_9700, at: b + 67, width: 4)
        put(ascii: label, at: b + 71)
        put(ascii: "FAT32   ", at: b + 82)
        put(ascii: "This is not a bootable disk.  Please insert a bootable floppy and press any key", at: b + 420)
        bytes[b + 510] = 0x55
        bytes[b + 511] = 0xAA
    }

    // MARK: GPT

    struct GPTEntry {
        var type: String
        var first: UInt64
        var last: UInt64
        var name: String
    }

    static let linuxGUID = "0fc63daf-8483-4772-8e79-3d69d8477de4"
    static let efiGUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"

    /// Protective MBR, primary header at LBA 1 with entries at LBA 2, backup entries before the
    /// backup header at the last LBA; all CRCs correct.
    mutating func gpt(_ entries: [GPTEntry], entryCount: UInt32 = 128, entrySize: UInt32 = 128) {
        mbrEntry(index: 0, type: 0xEE, start: 1, count: min(sectorCount - 1, 0xFFFF_FFFF))
        var array = [UInt8](repeating: 0, count: Int(entryCount) * Int(entrySize))
        for (i, e) in entries.enumerated() {
            let base = i * Int(entrySize)
            array.replaceSubrange(base..<base + 16, with: Self.guidBytes(e.type))
            array.replaceSubrange(base + 16..<base + 32, with: Self.guidBytes("11111111-2222-3333-4444-55555555555\(i)"))
            for (k, v) in [(32, e.first), (40, e.last)] {
                for j in 0..<8 { array[base + k + j] = UInt8(truncatingIfNeeded: v >> (8 * j)) }
            }
            for (j, unit) in e.name.utf16.enumerated() {
                array[base + 56 + 2 * j] = UInt8(unit & 0xff)
                array[base + 57 + 2 * j] = UInt8(unit >> 8)
            }
        }
        let arraySectors = UInt64((array.count + 511) / 512)
        let last = sectorCount - 1
        put(array, at: 2 * 512)
        put(array, at: Int(last - arraySectors) * 512)
        header(lba: 1, alternate: last, entriesLBA: 2, count: entryCount, size: entrySize, arrayCRC: CRC32.checksum(array))
        header(lba: last, alternate: 1, entriesLBA: last - arraySectors, count: entryCount, size: entrySize,
               arrayCRC: CRC32.checksum(array))
    }

    mutating func header(lba: UInt64, alternate: UInt64, entriesLBA: UInt64, count: UInt32, size: UInt32, arrayCRC: UInt32) {
        let b = Int(lba) * 512
        put(ascii: "EFI PART", at: b)
        put(0x0001_0000, at: b + 8, width: 4)
        put(92, at: b + 12, width: 4)
        put(0, at: b + 16, width: 4)
        put(lba, at: b + 24, width: 8)
        put(alternate, at: b + 32, width: 8)
        put(34, at: b + 40, width: 8)
        put(sectorCount - 34, at: b + 48, width: 8)
        put(entriesLBA, at: b + 72, width: 8)
        put(UInt64(count), at: b + 80, width: 4)
        put(UInt64(size), at: b + 84, width: 4)
        put(UInt64(arrayCRC), at: b + 88, width: 4)
        resealHeader(lba: lba)
    }

    /// Recomputes a header's CRC after a field was changed on purpose.
    mutating func resealHeader(lba: UInt64) {
        let b = Int(lba) * 512
        put(0, at: b + 16, width: 4)
        put(UInt64(CRC32.checksum(Array(bytes[b..<b + 92]))), at: b + 16, width: 4)
    }

    mutating func corrupt(byte: Int) { bytes[byte] ^= 0xFF }

    static func guidBytes(_ text: String) -> [UInt8] {
        let hex = Array(text.filter { $0 != "-" })
        let raw = stride(from: 0, to: 32, by: 2).map { UInt8(String(hex[$0...$0 + 1]), radix: 16)! }
        return [raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6]] + raw[8...]
    }
}
