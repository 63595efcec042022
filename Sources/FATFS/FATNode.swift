/// Where an 8.3 entry lives: its directory's first cluster (0 = fixed root) and its index there.
struct EntryKey: Hashable {
    var directory: UInt32
    var index: Int
}

/// A file or directory the FUSE layer holds. The volume keeps the node's entry (the authoritative
/// copy of its size, cluster and times) and writes it through to its directory entry after each change.
struct FATNode {
    var parent: FATNodeID
    /// nil for the root and for unlinked nodes.
    var key: EntryKey?
    var firstSlot: Int
    var entry: FATShortEntry
    var lookups: UInt64
    /// Nodes in the table whose parent this is (a node stays while children reference it).
    var children = 0
    var unlinked = false
    /// Cached cluster chain: for a file the clusters its size covers, for a directory all of them.
    var clusters: [UInt32]?

    var isDirectory: Bool { entry.isDirectory }
}
