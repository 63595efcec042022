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
    /// struct file_handle bytes (header + f_handle) from name_to_handle_at.
    let handle: [UInt8]
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
}

/// Node IDs handed to the kernel: counter-allocated, never reused, never pointers. FUSE_ROOT_ID (1) is `/`.
/// Virtual nodes live for the whole session (a handful per image name); passthrough nodes carry a lookup
/// count and are erased when `forget` brings it to zero.
struct NodeTable {
    private(set) var nodes: [UInt64: (kind: NodeKind, lookups: UInt64)] = [1: (.root, 0)]
    private var byKey: [InodeKey: UInt64] = [:]
    private var imageIDs: [String: UInt64] = [:]
    private var sandboxesIDs: [String: UInt64] = [:]
    private var pseudoInodes: [String: UInt64] = [:]
    private var nextID: UInt64 = 2

    subscript(id: UInt64) -> NodeKind? { nodes[id]?.kind }

    var passNodeCount: Int { byKey.count }

    private mutating func allocate() -> UInt64 {
        defer { nextID &+= 1 }
        return nextID
    }

    mutating func imageNode(_ name: String) -> UInt64 {
        if let id = imageIDs[name] { return id }
        let id = allocate()
        imageIDs[name] = id
        nodes[id] = (.image(name), 0)
        return id
    }

    mutating func sandboxesNode(_ image: String) -> UInt64 {
        if let id = sandboxesIDs[image] { return id }
        let id = allocate()
        sandboxesIDs[image] = id
        nodes[id] = (.sandboxes(image), 0)
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
    /// different file (different handle) gets a fresh node; the old one lives on until forgotten.
    mutating func lookUp(key: InodeKey, handle: [UInt8], type: UInt32) -> UInt64 {
        if let id = byKey[key], let entry = nodes[id], case .pass(let node) = entry.kind,
           node.handle == handle, node.type == type {
            nodes[id] = (entry.kind, entry.lookups &+ 1)
            return id
        }
        let id = allocate()
        nodes[id] = (.pass(PassNode(serial: key.serial, key: key, handle: handle, type: type)), 1)
        byKey[key] = id
        return id
    }

    /// Lowers the lookup count; returns true when a passthrough node was erased.
    mutating func forget(_ id: UInt64, _ count: UInt64) -> Bool {
        guard let entry = nodes[id], case .pass(let node) = entry.kind else { return false }
        let left = entry.lookups > count ? entry.lookups - count : 0
        if left > 0 {
            nodes[id] = (entry.kind, left)
            return false
        }
        nodes[id] = nil
        if byKey[node.key] == id { byKey[node.key] = nil }
        return true
    }

    /// Dictionaries keep their capacity when emptied: after the kernel forgets a big tree, rebuild them at
    /// their size so the memory can go back. Returns true when it did (rarely: below a quarter full).
    mutating func shrinkIfSparse() -> Bool {
        guard nodes.capacity > 4096, nodes.count * 4 < nodes.capacity else { return false }
        nodes = Self.rebuilt(nodes)
        byKey = Self.rebuilt(byKey)
        return true
    }

    private static func rebuilt<K: Hashable, V>(_ dictionary: [K: V]) -> [K: V] {
        var fresh = [K: V](minimumCapacity: dictionary.count)
        for (key, value) in dictionary { fresh[key] = value }
        return fresh
    }
}
