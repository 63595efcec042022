import Glibc

/// One passthrough node in the slab: what the layer remembers about an inode the kernel knows (no fd).
/// 80 bytes with a handle of up to 40 bytes inline (checked in NodeTableTests).
struct PassSlot {
    var serial: UInt64
    var dev: UInt64
    var ino: UInt64
    /// Generation of the node ID last handed out from this slot (0: never handed out).
    var generation: UInt32
    /// The kernel's lookup count; 0 marks a free slot. Saturates: a node that reaches the maximum is kept
    /// for the session rather than risk erasing it while the kernel still holds lookups.
    var lookups: UInt32
    var handle: FileHandleBytes
    /// S_IFMT bits of st_mode, shifted down by 12.
    var typeBits: UInt8

    static let vacant = PassSlot(serial: 0, dev: 0, ino: 0, generation: 0, lookups: 0,
                                 handle: FileHandleBytes(type: 0, bytes: []), typeBits: 0)
}

/// Passthrough nodes in fixed-size chunks of slots with a free list. A node ID is
/// (generation << 32) | slot, generation >= 1 and raised on every reuse of the slot, so the kernel never sees
/// one ID for two inodes, and IDs below 2^32 stay free for the virtual tree.
///
/// Chunks (4096 slots) rather than one array: growth never copies the whole table or overshoots by more
/// than a chunk, and a chunk whose nodes are all forgotten can be given back on its own. A released chunk
/// remembers the highest generation it had, and its slots restart above it.
struct NodeSlab {
    static let chunkShift = 12
    static let chunkSize = 1 << chunkShift
    /// Slot numbers are 32 bits.
    static let maxChunks = 1 << (32 - chunkShift)
    /// Chunks it may hold (maxChunks; fewer in tests).
    private let chunkLimit: Int

    init(chunkLimit: Int = NodeSlab.maxChunks) {
        self.chunkLimit = min(chunkLimit, Self.maxChunks)
    }

    private struct Chunk {
        var slots = ContiguousArray<PassSlot>()
        var live = 0
        /// At least the generation of every slot this chunk had before it was released.
        var floor: UInt32 = 0

        /// Room to grow: not full, and not retired (generations exhausted, never reached in practice).
        var canGrow: Bool { slots.count < NodeSlab.chunkSize && floor < UInt32.max }
    }

    private var chunks: [Chunk] = []
    /// Free slots in chunks that hold slots; popped from the end.
    private var free = ContiguousArray<UInt32>()
    /// No chunk below this one can grow.
    private var growHint = 0
    /// Chunks that hold slots but no live node: what `releaseEmptyChunks` could give back.
    private var emptyChunks = 0
    private(set) var liveCount = 0
    /// Slots held in memory, live or free.
    private(set) var slotCount = 0

    private static func split(_ slot: UInt32) -> (chunk: Int, offset: Int) {
        (Int(slot) >> chunkShift, Int(slot) & (chunkSize - 1))
    }

    static func id(slot: UInt32, generation: UInt32) -> UInt64 {
        UInt64(generation) << 32 | UInt64(slot)
    }

    subscript(slot: UInt32) -> PassSlot {
        let (c, o) = Self.split(slot)
        return chunks[c].slots[o]
    }

    func key(of slot: UInt32) -> (dev: UInt64, ino: UInt64) {
        let (c, o) = Self.split(slot)
        let node = chunks[c].slots[o]
        return (node.dev, node.ino)
    }

    /// The live slot `id` names, or nil when the ID is not (or no longer) a node's.
    func slot(forID id: UInt64) -> UInt32? {
        let generation = UInt32(truncatingIfNeeded: id >> 32)
        let slot = UInt32(truncatingIfNeeded: id)
        let (c, o) = Self.split(slot)
        guard generation != 0, c < chunks.count, o < chunks[c].slots.count else { return nil }
        let node = chunks[c].slots[o]
        guard node.lookups > 0, node.generation == generation else { return nil }
        return slot
    }

    /// Stores `node` (its generation is set here) with one lookup; returns its slot and ID, nil when every
    /// slot number is taken.
    mutating func allocate(_ node: PassSlot) -> (slot: UInt32, id: UInt64)? {
        var node = node
        node.lookups = 1
        if let slot = free.popLast() {
            let (c, o) = Self.split(slot)
            occupy(c)
            node.generation = chunks[c].slots[o].generation + 1
            chunks[c].slots[o] = node
            return (slot, Self.id(slot: slot, generation: node.generation))
        }
        while growHint < chunks.count, !chunks[growHint].canGrow { growHint += 1 }
        if growHint == chunks.count {
            guard chunks.count < chunkLimit else { return nil }
            chunks.append(Chunk())
        }
        let c = growHint
        if chunks[c].slots.isEmpty { chunks[c].slots.reserveCapacity(Self.chunkSize) }
        occupy(c)
        node.generation = chunks[c].floor + 1
        let slot = UInt32(c << Self.chunkShift | chunks[c].slots.count)
        chunks[c].slots.append(node)
        slotCount += 1
        return (slot, Self.id(slot: slot, generation: node.generation))
    }

    private mutating func occupy(_ c: Int) {
        if chunks[c].live == 0, !chunks[c].slots.isEmpty { emptyChunks -= 1 }
        chunks[c].live += 1
        liveCount += 1
    }

    /// Raises the lookup count of a live slot by one (saturating).
    mutating func addLookup(_ slot: UInt32) {
        let (c, o) = Self.split(slot)
        if chunks[c].slots[o].lookups < UInt32.max { chunks[c].slots[o].lookups += 1 }
    }

    enum Drop { case kept, zero, overForgotten }

    /// Lowers the lookup count of a live slot. At zero, or below (the kernel forgot more than it looked up:
    /// an invariant break the caller counts), the caller frees it.
    mutating func dropLookups(_ slot: UInt32, _ count: UInt64) -> Drop {
        let (c, o) = Self.split(slot)
        let lookups = chunks[c].slots[o].lookups
        guard lookups < UInt32.max else { return .kept }
        guard UInt64(lookups) <= count else {
            chunks[c].slots[o].lookups = lookups - UInt32(count)
            return .kept
        }
        return UInt64(lookups) == count ? .zero : .overForgotten
    }

    /// Frees a live slot; its generation stays, so its next node gets a new ID.
    mutating func free(_ slot: UInt32) {
        let (c, o) = Self.split(slot)
        let generation = chunks[c].slots[o].generation
        var vacant = PassSlot.vacant
        vacant.generation = generation
        chunks[c].slots[o] = vacant
        chunks[c].live -= 1
        liveCount -= 1
        if chunks[c].live == 0 { emptyChunks += 1 }
        // A slot whose generations are used up is never handed out again.
        if generation < UInt32.max { free.append(slot) }
    }

    /// After the kernel forgets most nodes, gives back the chunks with no live node (when more than one
    /// chunk's worth of slots are held and under a quarter live). True when it released any.
    mutating func releaseEmptyChunks() -> Bool {
        guard emptyChunks > 0, slotCount > Self.chunkSize, liveCount * 4 < slotCount else { return false }
        for c in chunks.indices where chunks[c].live == 0 && !chunks[c].slots.isEmpty {
            let highest = chunks[c].slots.reduce(chunks[c].floor) { max($0, $1.generation) }
            slotCount -= chunks[c].slots.count
            chunks[c] = Chunk(floor: highest)
            growHint = min(growHint, c)
        }
        emptyChunks = 0
        // Lowest slots first from now on, so the high chunks are the ones that empty out next time.
        free = ContiguousArray(free.filter { !chunks[Self.split($0).chunk].slots.isEmpty }.sorted(by: >))
        return true
    }
}
