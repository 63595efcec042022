import Glibc

/// 8.3 names: how an entry's 11 bytes are shown (Linux shortname=mixed: the NT case bits are honoured
/// when reading), and the alias made for a new long name (Linux vfat_create_shortname with numeric
/// tails: "LONGFI~1.TXT", then a hex-hash form once ~1..~9 are taken).
enum ShortName {
    static let lowerBase: UInt8 = 0x08, lowerExt: UInt8 = 0x10
    /// ASCII characters that may stand in a short name besides letters and digits.
    static let allowed: Set<UInt16> = Set("!#$%&'()-@^_`{}~".utf16)
    /// Characters Linux replaces with '_' in an alias.
    static let replaced: Set<UInt16> = Set("+,;=[]".utf16)

    /// The name an entry shows (without a long name).
    static func display(_ raw: ArraySlice<UInt8>, caseFlags: UInt8) -> String {
        let b = raw.startIndex
        var base = Array(raw[b..<b + 8]), ext = Array(raw[b + 8..<b + 11])
        if base[0] == 0x05 { base[0] = 0xE5 }
        while base.last == 0x20 { base.removeLast() }
        while ext.last == 0x20 { ext.removeLast() }
        func text(_ bytes: [UInt8], lower: Bool) -> [UInt16] {
            bytes.map { byte in
                let c = lower && byte >= 0x41 && byte <= 0x5A ? byte + 0x20 : byte
                // '/' and NUL cannot appear in a POSIX name: show them as '_' (lookups compare this form).
                return c == 0 || c == 0x2F ? 0x5F : CodePage437.unicode(c)
            }
        }
        var units = text(base, lower: caseFlags & lowerBase != 0)
        if !ext.isEmpty { units += [0x2E] + text(ext, lower: caseFlags & lowerExt != 0) }
        return String(decoding: units, as: UTF16.self)
    }

    struct Alias {
        var bytes: [UInt8]
        /// The name needs long-name entries (it is not exactly this upper-case 8.3 name).
        var needsLongName: Bool
    }

    /// An alias for `name` (validated units) that `taken` does not hold. EEXIST when the name is itself a
    /// valid 8.3 name already taken; ENOSPC when no alias is left.
    static func alias(for name: [UInt16], taken: (ArraySlice<UInt8>) -> Bool) throws(FATError) -> Alias {
        // The extension starts after the last dot, unless that dot ends the name or only dots precede it.
        var extStart: Int? = name.lastIndex(of: 0x2E)
        if let e = extStart, name[..<e].allSatisfy({ $0 == 0x2E || $0 == 0x20 }) { extStart = nil }
        let baseUnits = extStart.map { Array(name[..<$0]) } ?? name
        let extUnits = extStart.map { Array(name[($0 + 1)...]) } ?? []

        var lossless = true
        var hasLower = false
        func convert(_ units: [UInt16], max: Int) -> [UInt8] {
            var out: [UInt8] = []
            for u in units {
                if u == 0x20 || u == 0x2E { lossless = false; continue }
                if out.count == max { lossless = false; break }
                if u >= 0x61 && u <= 0x7A { hasLower = true; out.append(UInt8(u - 0x20)) }
                else if (u >= 0x41 && u <= 0x5A) || (u >= 0x30 && u <= 0x39) || allowed.contains(u) { out.append(UInt8(u)) }
                else { lossless = false; out.append(0x5F) }   // '+' ',' ... and anything not ASCII
            }
            return out
        }
        var base = convert(baseUnits, max: 8)
        let ext = convert(extUnits, max: 3)
        if base.isEmpty { base = [0x5F]; lossless = false }

        var bytes = [UInt8](repeating: 0x20, count: 11)
        bytes.replaceSubrange(0..<base.count, with: base)
        bytes.replaceSubrange(8..<8 + ext.count, with: ext)
        if lossless {
            if taken(bytes[...]) { throw FATError(EEXIST, "8.3 name already in use") }
            return Alias(bytes: bytes, needsLongName: hasLower)
        }
        // Numeric tails ~1 ... ~9 on a base cut to 6 characters.
        let cut = min(base.count, 6)
        for i in 1...9 {
            var b = bytes
            for k in cut..<8 { b[k] = 0x20 }
            b[cut] = 0x7E
            b[cut + 1] = UInt8(ascii: "0") + UInt8(i)
            if !taken(b[...]) { return Alias(bytes: b, needsLongName: true) }
        }
        // Then 2 base characters, 4 hex digits and ~N, from a hash of the name (Linux uses jiffies).
        var hash: UInt32 = 2_166_136_261
        for u in name { hash = (hash ^ UInt32(u)) &* 16_777_619 }
        let short = min(base.count, 2)
        let digits = Array("0123456789ABCDEF".utf8)
        for attempt in 0..<65536 {
            var b = bytes
            for k in short..<8 { b[k] = 0x20 }
            let v = (hash &- UInt32(attempt) &* 11) & 0xFFFF
            for d in 0..<4 { b[short + d] = digits[Int((v >> (12 - 4 * UInt32(d))) & 0xF)] }
            b[short + 4] = 0x7E
            b[short + 5] = UInt8(ascii: "1") + UInt8((hash >> 16) & 7)
            if !taken(b[...]) { return Alias(bytes: b, needsLongName: true) }
        }
        throw FATError.noSpace("no free 8.3 alias left for the name in this directory")
    }
}
