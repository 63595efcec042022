/// (st_dev, st_ino) -> node slot, as an open-addressing table of bare slot numbers (4 bytes a bucket, where
/// a Dictionary<key, slot> takes 20): the keys live in the slots themselves and are read back through
/// the slab. Linear probing; removal shifts the following run back, so there are no tombstones.
struct InodeIndex {

    private static let empty = UInt32.max
    private static let minimumCapacity = 16

    private var buckets = ContiguousArray<UInt32>(repeating: empty, count: minimumCapacity)
    private(set) var count = 0

    var capacity: Int { buckets.count }

    private var mask: Int { buckets.count - 1 }

    /// Seeded per process: inode numbers come from untrusted images, so no one picks colliding ones.
    private static func hash(_ dev: UInt64, _ ino: UInt64) -> Int {
        var hasher = Hasher()
        hasher.combine(dev)
        hasher.combine(ino)
        return hasher.finalize()
    }

    /// The bucket holding `(dev, ino)`, or the empty bucket where it would go.
    private func probe(_ dev: UInt64, _ ino: UInt64, in slab: NodeSlab) -> (bucket: Int, found: Bool) {
        var bucket = Self.hash(dev, ino) & mask
        while true {
            let slot = buckets[bucket]
            if slot == Self.empty { return (bucket, false) }
            let key = slab.key(of: slot)
            if key.dev == dev, key.ino == ino { return (bucket, true) }
            bucket = (bucket + 1) & mask
        }
    }

    func find(dev: UInt64, ino: UInt64, in slab: NodeSlab) -> UInt32? {
        let (bucket, found) = probe(dev, ino, in: slab)
        return found ? buckets[bucket] : nil
    }

    /// Maps `(dev, ino)` to `slot`, replacing what it mapped to.
    mutating func set(dev: UInt64, ino: UInt64, slot: UInt32, in slab: NodeSlab) {
        var (bucket, found) = probe(dev, ino, in: slab)
        if !found, (count + 1) * 4 > capacity * 3 {
            rehash(capacity: capacity * 2, in: slab)
            bucket = probe(dev, ino, in: slab).bucket
        }
        if !found { count += 1 }
        buckets[bucket] = slot
    }

    /// Unmaps `(dev, ino)` if it maps to `slot` (a newer node for the same inode keeps its mapping).
    mutating func remove(dev: UInt64, ino: UInt64, slot: UInt32, in slab: NodeSlab) {
        var (hole, found) = probe(dev, ino, in: slab)
        guard found, buckets[hole] == slot else { return }
        buckets[hole] = Self.empty
        count -= 1
        // Shift back every later member of the run that may sit at the hole (its home is not in (hole, here]).
        var here = (hole + 1) & mask
        while buckets[here] != Self.empty {
            let key = slab.key(of: buckets[here])
            let home = Self.hash(key.dev, key.ino) & mask
            let distanceHome = (here - home) & mask
            let distanceHole = (here - hole) & mask
            if distanceHome >= distanceHole {
                buckets[hole] = buckets[here]
                buckets[here] = Self.empty
                hole = here
            }
            here = (here + 1) & mask
        }
    }

    /// Rebuilds at the smallest capacity that holds the members below 3/4 load; true when that shrank it.
    mutating func shrinkToFit(in slab: NodeSlab) -> Bool {
        var fit = Self.minimumCapacity
        while count * 4 > fit * 3 { fit *= 2 }
        guard fit < capacity else { return false }
        rehash(capacity: fit, in: slab)
        return true
    }

    private mutating func rehash(capacity: Int, in slab: NodeSlab) {
        let old = buckets
        buckets = ContiguousArray(repeating: Self.empty, count: capacity)
        for slot in old where slot != Self.empty {
            let key = slab.key(of: slot)
            var bucket = Self.hash(key.dev, key.ino) & mask
            while buckets[bucket] != Self.empty { bucket = (bucket + 1) & mask }
            buckets[bucket] = slot
        }
    }
}
