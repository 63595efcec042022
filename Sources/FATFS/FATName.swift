import Glibc

/// Rules for names given by callers (Linux namei_vfat): trailing dots are stripped, FAT's forbidden
/// characters are EINVAL, more than 255 UTF-16 units ENAMETOOLONG. Comparison folds ASCII case only,
/// as Linux vfat does with the utf8 option.
enum FATName {
    static let maxUnits = 255

    static func isForbidden(_ u: UInt16) -> Bool {
        u < 0x20 || u == 0x7F || [0x22, 0x2A, 0x2F, 0x3A, 0x3C, 0x3E, 0x3F, 0x5C, 0x7C].contains(u)  // " * / : < > ? \ |
    }

    /// The UTF-16 units to store for a new name.
    static func validate(_ name: String) throws(FATError) -> [UInt16] {
        var units = Array(name.utf16)
        while units.last == 0x2E { units.removeLast() }
        guard !units.isEmpty, name != ".", name != ".." else { throw FATError(EINVAL, "invalid FAT name \"\(name)\"") }
        guard units.count <= maxUnits else {
            throw FATError(ENAMETOOLONG, "name of \(units.count) UTF-16 units, FAT allows \(maxUnits)")
        }
        if let bad = units.first(where: isForbidden) {
            throw FATError(EINVAL, "name \"\(name)\" holds a character FAT forbids (U+\(String(bad, radix: 16)))")
        }
        return units
    }

    /// The folded form a lookup compares: nil when no entry can have this name. A name holding a forbidden
    /// character is looked up all the same: a damaged or foreign volume may hold one, readdir lists it, and
    /// Linux vfat finds it too (only new names are refused).
    static func lookupKey(_ name: String) throws(FATError) -> [UInt16]? {
        var units = Array(name.utf16)
        while units.last == 0x2E { units.removeLast() }
        guard units.count <= maxUnits else {
            throw FATError(ENAMETOOLONG, "name of \(units.count) UTF-16 units, FAT allows \(maxUnits)")
        }
        guard !units.isEmpty else { return nil }
        return fold(units)
    }

    static func fold(_ units: [UInt16]) -> [UInt16] {
        units.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }
    }
}
