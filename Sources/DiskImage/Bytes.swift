/// Bounds-safe integer decoding from byte buffers. Out-of-range reads yield 0 instead of trapping:
/// callers read fixed-size buffers at fixed offsets, so this only guards against our own slips.
extension Array where Element == UInt8 {
    func u8(_ at: Int) -> UInt8 {
        indices.contains(at) ? self[at] : 0
    }

    func le16(_ at: Int) -> UInt16 { UInt16(le(at, 2)) }
    func le32(_ at: Int) -> UInt32 { UInt32(le(at, 4)) }
    func le64(_ at: Int) -> UInt64 { le(at, 8) }
    func be16(_ at: Int) -> UInt16 { UInt16(be(at, 2)) }
    func be32(_ at: Int) -> UInt32 { UInt32(be(at, 4)) }
    func be64(_ at: Int) -> UInt64 { be(at, 8) }

    private func le(_ at: Int, _ width: Int) -> UInt64 {
        guard at >= 0, at <= count - width else { return 0 }
        var v: UInt64 = 0
        for i in (0..<width).reversed() { v = v << 8 | UInt64(self[at + i]) }
        return v
    }

    private func be(_ at: Int, _ width: Int) -> UInt64 {
        guard at >= 0, at <= count - width else { return 0 }
        var v: UInt64 = 0
        for i in 0..<width { v = v << 8 | UInt64(self[at + i]) }
        return v
    }

    /// `count` bytes from `at` (fewer if the buffer is shorter).
    func slice(_ at: Int, _ length: Int) -> [UInt8] {
        guard at >= 0, at < count, length > 0 else { return [] }
        return Array(self[at..<Swift.min(count, at + length)])
    }

    func matches(_ ascii: String, at: Int) -> Bool {
        slice(at, ascii.utf8.count) == Array(ascii.utf8)
    }

    /// A NUL-padded text field (label); nil when empty. Invalid UTF-8 is replaced, never trapped on.
    func cString(_ at: Int, _ length: Int) -> String? {
        let raw = slice(at, length)
        let bytes = raw.prefix { $0 != 0 }
        guard !bytes.isEmpty else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Standard 8-4-4-4-12 text of 16 bytes in stored order (ext4, xfs, btrfs); nil when all zero.
    func uuidString(_ at: Int) -> String? {
        let raw = slice(at, 16)
        guard raw.count == 16, raw.contains(where: { $0 != 0 }) else { return nil }
        return formatUUID(raw)
    }
}

func formatUUID(_ b: [UInt8]) -> String {
    let hex = b.map(hexByte)
    return hex[0..<4].joined() + "-" + hex[4..<6].joined() + "-" + hex[6..<8].joined() + "-"
        + hex[8..<10].joined() + "-" + hex[10..<16].joined()
}

func hexByte(_ b: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(b >> 4)], digits[Int(b & 0xf)]])
}

let sectorSize: UInt64 = 512
