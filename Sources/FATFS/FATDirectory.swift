/// One directory's 32-byte entries, read whole (FAT directories are at most 65536 entries, 2 MiB),
/// with where each entry lives on the device.
struct FATDirectory {
    static let maxEntries = 65536

    /// First cluster of the directory, 0 for the fixed FAT12/16 root.
    let cluster: UInt32
    /// Device byte ranges holding the directory, in order (clusters, or the fixed root region).
    var extents: [(offset: UInt64, length: Int)]
    var bytes: [UInt8]

    var entryCount: Int { bytes.count / 32 }

    func deviceOffset(ofEntry index: Int) -> UInt64 {
        var rest = index * 32
        for extent in extents {
            if rest < extent.length { return extent.offset + UInt64(rest) }
            rest -= extent.length
        }
        return extents.last.map { $0.offset + UInt64($0.length) } ?? 0   // callers stay below entryCount
    }

    func entry(_ index: Int) -> ArraySlice<UInt8> { bytes[index * 32..<index * 32 + 32] }

    /// Index of the first end-of-directory marker (0x00), or entryCount.
    var endIndex: Int {
        var i = 0
        while i < entryCount, bytes[i * 32] != 0 { i += 1 }
        return i
    }

    /// The named entries (not ".", "..", labels or deleted ones) with their long names when the
    /// long-name entries before them are complete and their checksum matches.
    func items() -> [FATDirItem] {
        var out: [FATDirItem] = []
        var units: [UInt16] = []
        var expected = 0        // ordinal the next long-name entry must carry, 0 = none pending
        var sum: UInt8 = 0
        var lfnStart = 0
        for i in 0..<entryCount {
            let e = entry(i)
            let first = e[e.startIndex], attr = e[e.startIndex + 11]
            if first == 0 { break }
            if first == 0xE5 { expected = 0; continue }
            if attr & 0x3F == 0x0F {
                let ordinal = Int(first & 0x1F)
                if first & 0x40 != 0, ordinal >= 1, ordinal <= 20 {
                    units = [UInt16](repeating: 0, count: ordinal * LongName.unitsPerEntry)
                    expected = ordinal
                    sum = e[e.startIndex + 13]
                    lfnStart = i
                } else if expected == 0 || ordinal != expected || e[e.startIndex + 13] != sum {
                    expected = 0
                    continue
                }
                let part = LongName.units(of: e)
                units.replaceSubrange((ordinal - 1) * 13..<ordinal * 13, with: part)
                expected = ordinal - 1
                if expected == 0 { expected = -1 }   // complete: the 8.3 entry must come next
                continue
            }
            let complete = expected == -1
            expected = 0
            if attr & 0x08 != 0 { continue }          // volume label
            let short = e[e.startIndex..<e.startIndex + 11]
            if short.elementsEqual(Array(".          ".utf8)) || short.elementsEqual(Array("..         ".utf8)) { continue }
            var name: String? = nil
            if complete, LongName.checksum(short) == sum {
                let end = units.firstIndex(of: 0) ?? units.count
                let long = units[..<end].map { $0 == 0x2F ? 0x5F : $0 }   // '/' cannot be shown
                if !long.isEmpty { name = String(decoding: long, as: UTF16.self) }
            }
            let display = name ?? ShortName.display(short, caseFlags: e[e.startIndex + 12])
            out.append(FATDirItem(index: i, firstSlot: name == nil ? i : lfnStart, name: display,
                                  entry: FATShortEntry(Array(e))))
        }
        return out
    }
}

/// A named entry found in a directory.
struct FATDirItem {
    var index: Int          // the 8.3 entry
    var firstSlot: Int      // the first long-name entry (== index without one)
    var name: String
    var entry: FATShortEntry

    var key: [UInt16] { FATName.fold(Array(name.utf16)) }
    var shortKey: [UInt16] { FATName.fold(Array(ShortName.display(entry.raw[0..<11], caseFlags: 0).utf16)) }
}

/// The 8.3 entry's fields.
struct FATShortEntry: Equatable {
    var raw: [UInt8]

    init(_ raw: [UInt8]) { self.raw = raw }

    static let readOnly: UInt8 = 0x01, directory: UInt8 = 0x10, archive: UInt8 = 0x20

    var attributes: UInt8 { get { raw[11] } set { raw[11] = newValue } }
    var isDirectory: Bool { attributes & Self.directory != 0 }
    var firstCluster: UInt32 {
        get { UInt32(raw.le16(20)) << 16 | UInt32(raw.le16(26)) }
        set { raw.setLE16(20, UInt16(newValue >> 16)); raw.setLE16(26, UInt16(truncatingIfNeeded: newValue)) }
    }
    var size: UInt32 { get { raw.le32(28) } set { raw.setLE32(28, newValue) } }

    var mtime: FATTime {
        get { FATTimestamp.decode(date: raw.le16(24), time: raw.le16(22)) }
        set { let t = FATTimestamp.encode(newValue); raw.setLE16(24, t.date); raw.setLE16(22, t.time) }
    }
    var crtime: FATTime {
        get { FATTimestamp.decode(date: raw.le16(16), time: raw.le16(14), centiseconds: raw[13]) }
        set {
            let t = FATTimestamp.encode(newValue)
            raw.setLE16(16, t.date); raw.setLE16(14, t.time); raw[13] = t.centiseconds
        }
    }
    var atime: FATTime {
        get { raw.le16(18) == 0 ? mtime : FATTimestamp.decode(date: raw.le16(18)) }
        set { raw.setLE16(18, FATTimestamp.encode(newValue).date) }
    }

    static func new(name: [UInt8], attributes: UInt8, cluster: UInt32, at time: FATTime) -> FATShortEntry {
        var e = FATShortEntry([UInt8](repeating: 0, count: 32))
        e.raw.replaceSubrange(0..<11, with: name.count == 11 ? name : [UInt8](repeating: 0x20, count: 11))
        e.attributes = attributes
        e.firstCluster = cluster
        e.crtime = time
        e.mtime = time
        e.atime = time
        return e
    }
}
