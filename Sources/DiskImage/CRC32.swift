/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) as GPT uses it.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        update(0xFFFF_FFFF, bytes) ^ 0xFFFF_FFFF
    }

    /// The bare register update: LVM2's calc_crc is this from its own initial value, without final inversion.
    static func update<C: Collection<UInt8>>(_ initial: UInt32, _ bytes: C) -> UInt32 {
        var crc = initial
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xff)] ^ (crc >> 8) }
        return crc
    }
}
