/// VFAT long-name entries: 13 UTF-16 units each, stored last part first (ordinal | 0x40 on the first
/// entry written), each carrying the checksum of the 8.3 entry that follows them.
enum LongName {
    static let unitsPerEntry = 13
    static let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]

    static func checksum(_ short: ArraySlice<UInt8>) -> UInt8 {
        var sum: UInt8 = 0
        for byte in short { sum = (sum & 1 != 0 ? 0x80 : 0) &+ (sum >> 1) &+ byte }
        return sum
    }

    static func entryCount(_ units: Int) -> Int { (units + unitsPerEntry - 1) / unitsPerEntry }

    /// The entries for `name` in on-disk order.
    static func entries(for name: [UInt16], checksum: UInt8) -> [[UInt8]] {
        let count = entryCount(name.count)
        var out: [[UInt8]] = []
        for ordinal in stride(from: count, through: 1, by: -1) {
            var e = [UInt8](repeating: 0, count: 32)
            e[0] = UInt8(ordinal) | (ordinal == count ? 0x40 : 0)
            e[11] = 0x0F
            e[13] = checksum
            for (i, off) in offsets.enumerated() {
                let k = (ordinal - 1) * unitsPerEntry + i
                let unit: UInt16 = k < name.count ? name[k] : k == name.count ? 0 : 0xFFFF
                e.setLE16(off, unit)
            }
            out.append(e)
        }
        return out
    }

    /// The units of one entry.
    static func units(of e: ArraySlice<UInt8>) -> [UInt16] {
        let base = e.startIndex
        return offsets.map { UInt16(e[base + $0]) | UInt16(e[base + $0 + 1]) << 8 }
    }
}
