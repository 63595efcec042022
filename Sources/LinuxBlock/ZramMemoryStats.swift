/// The first three fields of zram's mm_stat: data stored, its compressed size, memory used including overhead.
public struct ZramMemoryStats: Sendable, Equatable {
    public let originalBytes: UInt64
    public let compressedBytes: UInt64
    public let memoryUsedBytes: UInt64

    public init(originalBytes: UInt64, compressedBytes: UInt64, memoryUsedBytes: UInt64) {
        self.originalBytes = originalBytes
        self.compressedBytes = compressedBytes
        self.memoryUsedBytes = memoryUsedBytes
    }

    /// "orig_data_size compr_data_size mem_used_total mem_limit ..." (blank-padded columns).
    public init?(mmStat: String) {
        let fields = mmStat.split(whereSeparator: \.isWhitespace)
        guard fields.count >= 3, let original = UInt64(fields[0]), let compressed = UInt64(fields[1]),
              let used = UInt64(fields[2]) else { return nil }
        self.init(originalBytes: original, compressedBytes: compressed, memoryUsedBytes: used)
    }
}
