import Glibc

/// Identity of an inode inside one sandbox. The serial keeps two sandboxes of the same image apart.
struct InodeKey: Hashable {
    let serial: UInt64
    let dev: UInt64
    let ino: UInt64
}

/// What the layer remembers about a passthrough inode: no fd, only its kernel file handle.
struct PassNode {
    let serial: UInt64
    let key: InodeKey
    /// The struct file_handle from name_to_handle_at.
    let handle: FileHandleBytes
    /// File type bits (S_IFMT part of st_mode); fixed for the life of an inode.
    let type: UInt32

    var isSymlink: Bool { type == UInt32(SwiftGlibc.S_IFLNK) }
    var isDirectory: Bool { type == UInt32(SwiftGlibc.S_IFDIR) }
}

enum NodeKind {
    case root
    case image(String)
    case sandboxes(String)
    case pass(PassNode)
    /// A node of a FAT partition: the partition's serial and FATFS's node ID (see NodeTable.fatID).
    case fat(serial: UInt64, node: UInt64)
}

/// Node IDs handed to the kernel: never reused for another inode, never pointers. FUSE_ROOT_ID (1) is `/`.
/// Virtual nodes (a handful per image name) are counter-allocated below 2^32 and live for the whole
/// session; passthrough nodes live in a slab (IDs from 2^32 up, see NodeSlab), carry a lookup count and are
/// erased when `forget` brings it to zero. Passthrough memory is what counts (100,000+ files per image):
/// about 80 bytes a node in the slab plus 4 to 10 in the (dev, ino) index.
///
/// It runs inside FUSE callbacks, where a trap kills the daemon and leaves the mount dead: a broken
/// invariant is counted in `anomalies` (the caller logs it) and answered, never trapped on.
struct NodeTable {
    /// Invariant breaks met so far.
    struct Anomalies: Equatable {
        /// Forgets of more lookups than the node had (the node is erased all the same).
        var overForgets = 0
        /// Virtual IDs ran out: the name got node 0, which the kernel takes as "no such entry".
        var virtualIDsExhausted = 0
        /// The slab ran out of slots: the lookup failed with ENFILE.
        var slabExhausted = 0
    }

    private(set) var anomalies = Anomalies()
    /// Virtual IDs stay below this (2^32: passthrough IDs start there); lower in tests.
    private let virtualIDLimit: UInt64
    private var virtualNodes: [UInt64: NodeKind] = [1: .root]
    private var imageIDs: [String: UInt64] = [:]
    private var sandboxesIDs: [String: UInt64] = [:]
    private var pseudoInodes: [String: UInt64] = [:]
    private var nextID: UInt64 = 2
    private var slab: NodeSlab
    /// (dev, ino) -> the slot of the newest node for that inode.
    private var index = InodeIndex()

    init(virtualIDLimit: UInt64 = 1 << 32, slabChunkLimit: Int = NodeSlab.maxChunks) {
        self.virtualIDLimit = min(virtualIDLimit, 1 << 32)
        slab = NodeSlab(chunkLimit: slabChunkLimit)
    }

    /// FAT nodes need no table: the top bit, 23 bits of partition serial, 40 bits of FATFS node ID (IDs the
    /// slab hands out stay far below 2^63).
    static func fatID(serial: UInt64, node: UInt64) -> UInt64? {
        guard serial < 1 << 23, node < 1 << 40 else { return nil }
        return 1 << 63 | serial << 40 | node
    }

    subscript(id: UInt64) -> NodeKind? {
        if id >= 1 << 63 { return .fat(serial: (id >> 40) & (1 << 23 - 1), node: id & (1 << 40 - 1)) }
        if id < 1 << 32 { return virtualNodes[id] }
        guard let slot = slab.slot(forID: id) else { return nil }
        let node = slab[slot]
        return .pass(PassNode(serial: node.serial, key: InodeKey(serial: node.serial, dev: node.dev, ino: node.ino),
                              handle: node.handle, type: UInt32(node.typeBits) << 12))
    }

    var passNodeCount: Int { slab.liveCount }

    private mutating func allocate() -> UInt64 {
        guard nextID < virtualIDLimit else {
            anomalies.virtualIDsExhausted += 1
            return 0
        }
        defer { nextID += 1 }
        return nextID
    }

    mutating func imageNode(_ name: String) -> UInt64 {
        if let id = imageIDs[name] { return id }
        let id = allocate()
        imageIDs[name] = id
        virtualNodes[id] = .image(name)
        return id
    }

    mutating func sandboxesNode(_ image: String) -> UInt64 {
        if let id = sandboxesIDs[image] { return id }
        let id = allocate()
        sandboxesIDs[image] = id
        virtualNodes[id] = .sandboxes(image)
        return id
    }

    /// A stable d_ino for a sandbox name in a listing (before its root is looked up).
    mutating func pseudoInode(_ image: String, _ name: String) -> UInt64 {
        let key = image + "/" + name
        if let ino = pseudoInodes[key] { return ino }
        let ino = allocate()
        pseudoInodes[key] = ino
        return ino
    }

    /// The node for an inode just looked up, its lookup count raised by one. An inode number reused for a
    /// different file (different handle or type) or met in another sandbox (different serial) gets a fresh
    /// node; the old one lives on until forgotten. Nil when the slab is full.
    mutating func lookUp(key: InodeKey, handle: FileHandleBytes, type: UInt32) -> UInt64? {
        if let slot = index.find(dev: key.dev, ino: key.ino, in: slab) {
            let node = slab[slot]
            if node.serial == key.serial, UInt32(node.typeBits) << 12 == type, node.handle == handle {
                slab.addLookup(slot)
                return NodeSlab.id(slot: slot, generation: node.generation)
            }
        }
        guard let (slot, id) = slab.allocate(PassSlot(serial: key.serial, dev: key.dev, ino: key.ino, generation: 0,
                                                      lookups: 1, handle: handle, typeBits: UInt8(type >> 12))) else {
            anomalies.slabExhausted += 1
            return nil
        }
        index.set(dev: key.dev, ino: key.ino, slot: slot, in: slab)
        return id
    }

    /// Lowers the lookup count; returns true when a passthrough node was erased.
    mutating func forget(_ id: UInt64, _ count: UInt64) -> Bool {
        guard let slot = slab.slot(forID: id) else { return false }
        switch slab.dropLookups(slot, count) {
        case .kept: return false
        case .zero: break
        case .overForgotten: anomalies.overForgets += 1
        }
        let key = slab.key(of: slot)
        index.remove(dev: key.dev, ino: key.ino, slot: slot, in: slab)
        slab.free(slot)
        return true
    }

    /// After the kernel forgets a big tree: shrink the index and give back the slab's empty chunks, so the
    /// memory can go back. Returns true when it did (rarely: below a quarter full).
    mutating func shrinkIfSparse() -> Bool {
        let shrankIndex = index.capacity > 4096 && index.count * 4 < index.capacity && index.shrinkToFit(in: slab)
        let releasedChunks = slab.releaseEmptyChunks()
        return shrankIndex || releasedChunks
    }
}
