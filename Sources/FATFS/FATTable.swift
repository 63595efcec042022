/// The active FAT in memory (raw bytes, decoded on access), written back to every FAT copy after each
/// change. Chains are followed with bounds and loop checks: a hostile FAT becomes an EIO, never a hang.
struct FATTable {
    let type: FATType
    let clusterCount: Int
    let bytesPerSector: Int
    var bytes: [UInt8]
    var dirtySectors: Set<Int> = []
    var freeCount: Int
    /// Where the next allocation starts looking (a rover, like FSInfo's next-free hint).
    var hint: UInt32 = 2

    var maxCluster: UInt32 { UInt32(clusterCount + 1) }
    var endMarker: UInt32 { type == .fat12 ? 0xFFF : type == .fat16 ? 0xFFFF : 0x0FFF_FFFF }
    var firstEnd: UInt32 { type == .fat12 ? 0xFF8 : type == .fat16 ? 0xFFF8 : 0x0FFF_FFF8 }
    var badMarker: UInt32 { firstEnd - 1 }

    init(type: FATType, clusterCount: Int, bytesPerSector: Int, bytes: [UInt8]) {
        self.type = type
        self.clusterCount = clusterCount
        self.bytesPerSector = bytesPerSector
        self.bytes = bytes
        freeCount = 0
        freeCount = countFree()
    }

    /// Free entries among clusters 2...maxCluster, on the raw bytes (this runs at every open).
    func countFree() -> Int {
        let last = Int(maxCluster)
        return bytes.withUnsafeBytes { b -> Int in
            var free = 0
            switch type {
            case .fat12:
                for n in 2...last {
                    let off = n + n / 2
                    guard off + 1 < b.count else { break }
                    let v = UInt16(b[off]) | UInt16(b[off + 1]) << 8
                    if (n & 1 == 0 ? v & 0xFFF : v >> 4) == 0 { free += 1 }
                }
            case .fat16:
                for n in 2...min(last, b.count / 2 - 1) where b[2 * n] == 0 && b[2 * n + 1] == 0 { free += 1 }
            case .fat32:
                for n in 2...min(last, b.count / 4 - 1)
                where b.loadUnaligned(fromByteOffset: 4 * n, as: UInt32.self) & 0x0FFF_FFFF == 0 { free += 1 }
            }
            return free
        }
    }

    /// The entry of cluster n (2...maxCluster, or 0/1 for the reserved entries).
    func raw(_ n: UInt32) -> UInt32 {
        switch type {
        case .fat12:
            let off = Int(n) + Int(n) / 2
            guard off + 1 < bytes.count else { return badMarker }
            let v = UInt32(bytes.le16(off))
            return n & 1 == 0 ? v & 0xFFF : v >> 4
        case .fat16:
            let off = Int(n) * 2
            guard off + 1 < bytes.count else { return badMarker }
            return UInt32(bytes.le16(off))
        case .fat32:
            let off = Int(n) * 4
            guard off + 3 < bytes.count else { return badMarker }
            return bytes.le32(off) & 0x0FFF_FFFF
        }
    }

    mutating func set(_ n: UInt32, _ value: UInt32) {
        let before = raw(n)
        switch type {
        case .fat12:
            let off = Int(n) + Int(n) / 2
            var v = UInt32(bytes.le16(off))
            v = n & 1 == 0 ? (v & 0xF000) | (value & 0xFFF) : (v & 0x000F) | ((value & 0xFFF) << 4)
            bytes.setLE16(off, UInt16(v))
            touch(off, 2)
        case .fat16:
            bytes.setLE16(Int(n) * 2, UInt16(truncatingIfNeeded: value))
            touch(Int(n) * 2, 2)
        case .fat32:
            let off = Int(n) * 4
            bytes.setLE32(off, (bytes.le32(off) & 0xF000_0000) | (value & 0x0FFF_FFFF))  // keep the reserved top bits
            touch(off, 4)
        }
        if before == 0 && value != 0 { freeCount -= 1 }
        if before != 0 && value == 0 { freeCount += 1 }
    }

    private mutating func touch(_ offset: Int, _ count: Int) {
        dirtySectors.insert(offset / bytesPerSector)
        dirtySectors.insert((offset + count - 1) / bytesPerSector)
    }

    func isValidCluster(_ c: UInt32) -> Bool { c >= 2 && c <= maxCluster }

    /// The next cluster after `c`, nil at the end of the chain; EIO for a free, bad, reserved or
    /// out-of-range entry inside a chain.
    func next(_ c: UInt32) throws(FATError) -> UInt32? {
        let v = raw(c)
        if v >= firstEnd { return nil }
        if isValidCluster(v) { return v }
        if v == 0 { throw .corrupt("cluster \(c) continues into a free cluster") }
        if v == badMarker { throw .corrupt("cluster \(c) continues into a bad cluster") }
        throw .corrupt("cluster \(c) points past the end of the volume (to \(v), last is \(maxCluster))")
    }

    /// The clusters of the chain starting at `first`: all of them, or only the first `limit` (a file
    /// needs no more than its size covers). EIO for a loop, a chain shorter than `limit` or longer
    /// than `maxLength`.
    func chain(from first: UInt32, limit: Int? = nil, maxLength: Int? = nil) throws(FATError) -> [UInt32] {
        guard isValidCluster(first) else { throw .corrupt("chain starts at cluster \(first), outside 2...\(maxCluster)") }
        let cap = min(maxLength ?? clusterCount, clusterCount)
        var out: [UInt32] = [first]
        var seen: Set<UInt32> = [first]
        var c = first
        while limit.map({ out.count < $0 }) ?? true {
            guard let n = try next(c) else {
                if let limit, out.count < limit {
                    throw .corrupt("chain from cluster \(first) ends after \(out.count) clusters, the file needs \(limit)")
                }
                return out
            }
            guard seen.insert(n).inserted else { throw .corrupt("chain from cluster \(first) loops at cluster \(n)") }
            guard out.count < cap else { throw .corrupt("chain from cluster \(first) is longer than \(cap) clusters") }
            out.append(n)
            c = n
        }
        return out
    }

    /// `count` free clusters linked into a chain ending in an end marker, searched from `near`
    /// (contiguous where possible). ENOSPC, with nothing changed, when fewer are free.
    mutating func allocate(_ count: Int, near: UInt32? = nil) throws(FATError) -> [UInt32] {
        guard count > 0 else { return [] }
        guard count <= freeCount else {
            throw .noSpace("FAT volume full: \(count) clusters needed, \(freeCount) free")
        }
        var found: [UInt32] = []
        found.reserveCapacity(count)
        var c = near.flatMap { isValidCluster($0) ? $0 : nil } ?? hint
        if !isValidCluster(c) { c = 2 }
        var scanned = 0
        while found.count < count && scanned < clusterCount {
            if raw(c) == 0 { found.append(c) }
            c = c >= maxCluster ? 2 : c + 1
            scanned += 1
        }
        guard found.count == count else { throw .corrupt("free cluster count \(freeCount) does not match the FAT") }
        for (i, cluster) in found.enumerated() {
            set(cluster, i + 1 < found.count ? found[i + 1] : endMarker)
        }
        hint = c
        return found
    }

    /// Marks the given clusters free.
    mutating func free(_ clusters: [UInt32]) {
        for c in clusters where isValidCluster(c) { set(c, 0) }
    }

    /// Writes the changed sectors into every FAT copy.
    mutating func commit(to device: any FATBlockDevice, boot: FATBootSector) throws(FATError) {
        for sector in dirtySectors.sorted() {
            let start = sector * bytesPerSector
            let slice = Array(bytes[start..<min(start + bytesPerSector, bytes.count)])
            for copy in 0..<boot.fatCount {
                try device.writeBytes(at: boot.fatOffset + UInt64(copy) * UInt64(boot.fatBytes) + UInt64(start), slice)
            }
        }
        dirtySectors.removeAll()
    }
}
