import Glibc

/// The node table: IDs for the FUSE layer that survive renames while the kernel holds them.
extension VolumeCore {
    func node(_ id: FATNodeID) throws(FATError) -> FATNode {
        guard let node = nodes[id] else { throw FATError(ESTALE, "node \(id) is not known (forgotten)") }
        return node
    }

    /// A directory node that still exists.
    func directoryNode(_ id: FATNodeID) throws(FATError) -> FATNode {
        let n = try node(id)
        guard n.isDirectory else { throw FATError(ENOTDIR, "node \(id) is not a directory") }
        guard !n.unlinked else { throw FATError(ENOENT, "directory \(id) was removed") }
        return n
    }

    /// The item named `name` in a directory, nil when there is none.
    func find(_ name: String, in dir: FATDirectory) throws(FATError) -> FATDirItem? {
        try find(name, in: dir.items())
    }

    func find(_ name: String, in items: [FATDirItem]) throws(FATError) -> FATDirItem? {
        guard let key = try FATName.lookupKey(name) else { return nil }
        return items.first { $0.key == key } ?? items.first { $0.shortKey == key }
    }

    /// The node of an item (made when new), its lookup count raised by `lookups`.
    func nodeID(for item: FATDirItem, in parentID: FATNodeID, lookups: UInt64) throws(FATError) -> FATNodeID {
        let parent = try node(parentID)
        let key = EntryKey(directory: directoryCluster(parent), index: item.index)
        if let id = byKey[key] {
            nodes[id]!.lookups += lookups
            return id
        }
        if item.entry.isDirectory { try checkNoCycle(item.entry.firstCluster, under: parentID) }
        let id = nextID
        nextID += 1
        nodes[id] = FATNode(parent: parentID, key: key, firstSlot: item.firstSlot, entry: item.entry, lookups: lookups)
        nodes[parentID]!.children += 1
        byKey[key] = id
        return id
    }

    /// A subdirectory must start at a cluster of its own: pointing at itself, an ancestor or the root
    /// makes the tree infinite.
    func checkNoCycle(_ cluster: UInt32, under parentID: FATNodeID) throws(FATError) {
        guard fat.isValidCluster(cluster) else {
            throw .corrupt("directory entry points at cluster \(cluster), outside 2...\(fat.maxCluster)")
        }
        guard cluster != boot.rootCluster || boot.type != .fat32 else { throw .corrupt("directory cycle: an entry points back at the root") }
        var id = parentID
        for _ in 0...nodes.count {
            let n = try node(id)
            if directoryCluster(n) == cluster { throw .corrupt("directory cycle: cluster \(cluster) is its own ancestor") }
            if id == FATVolume.rootID { return }
            id = n.parent
        }
        throw .corrupt("node table parent chain does not reach the root")
    }

    func forget(_ id: FATNodeID, count: UInt64) {
        guard id != FATVolume.rootID, var n = nodes[id] else { return }
        n.lookups -= min(count, n.lookups)
        nodes[id] = n
        removeIfUnused(id)
    }

    /// Drops a node nobody references; an unlinked file's clusters are freed then.
    func removeIfUnused(_ id: FATNodeID) {
        var id = id
        while id != FATVolume.rootID, let n = nodes[id], n.lookups == 0, n.children == 0 {
            if n.unlinked, !n.isDirectory, let clusters = try? fullChain(n.entry.firstCluster) {
                fat.free(clusters)
                try? commitFAT()
            }
            nodes[id] = nil
            if let key = n.key { byKey[key] = nil }
            nodes[n.parent]?.children -= 1
            id = n.parent
        }
    }

    /// Every cluster of a chain (empty for cluster 0).
    func fullChain(_ first: UInt32) throws(FATError) -> [UInt32] {
        first == 0 ? [] : try fat.chain(from: first)
    }

    /// A node's clusters: those its size covers (file) or all (directory), cached in the node.
    func clusters(of id: FATNodeID) throws(FATError) -> [UInt32] {
        let n = try node(id)
        if let c = n.clusters { return c }
        let c: [UInt32]
        if id == FATVolume.rootID && boot.type != .fat32 {
            c = []
        } else if n.isDirectory {
            c = try fat.chain(from: n.entry.firstCluster, maxLength: max(1, FATDirectory.maxEntries * 32 / clusterSize))
        } else {
            let needed = (Int(n.entry.size) + clusterSize - 1) / clusterSize
            if needed == 0 { c = [] }
            else if n.entry.firstCluster == 0 { throw .corrupt("file of \(n.entry.size) bytes has no cluster") }
            else { c = try fat.chain(from: n.entry.firstCluster, limit: needed) }
        }
        nodes[id]!.clusters = c
        return c
    }

    func attributes(_ id: FATNodeID) throws(FATError) -> FATAttr {
        let n = try node(id)
        let allocated: UInt64
        if n.isDirectory {
            allocated = id == FATVolume.rootID && boot.type != .fat32
                ? UInt64(boot.rootEntryCount * 32) : UInt64(try clusters(of: id).count * clusterSize)
        } else {
            allocated = (UInt64(n.entry.size) + UInt64(clusterSize) - 1) / UInt64(clusterSize) * UInt64(clusterSize)
        }
        let writable = n.isDirectory || n.entry.attributes & FATShortEntry.readOnly == 0
        let isRoot = id == FATVolume.rootID
        let mtime = isRoot ? FATTime(seconds: 0) : n.entry.mtime
        return FATAttr(id: id, isDirectory: n.isDirectory, size: n.isDirectory ? allocated : UInt64(n.entry.size),
                       mode: (n.isDirectory ? UInt32(S_IFDIR) : UInt32(S_IFREG)) | (writable ? 0o755 : 0o555),
                       nlink: 1, uid: 0, gid: 0, blocks: allocated / 512, blockSize: UInt32(clusterSize),
                       atime: isRoot ? mtime : n.entry.atime, mtime: mtime, ctime: mtime,
                       crtime: isRoot ? mtime : n.entry.crtime)
    }

    /// Writes a node's entry back to its directory (unlinked nodes and the root have none).
    func storeEntry(_ id: FATNodeID) throws(FATError) {
        let n = try node(id)
        guard let key = n.key else { return }
        try device.writeBytes(at: try entryOffset(key), n.entry.raw)
    }

    /// The device offset of an entry, without reading its directory.
    func entryOffset(_ key: EntryKey) throws(FATError) -> UInt64 {
        let byte = key.index * 32
        if key.directory == 0 {
            guard byte < boot.rootEntryCount * 32 else { throw .corrupt("entry \(key.index) beyond the root directory") }
            return boot.rootDirOffset + UInt64(byte)
        }
        let chain = try fat.chain(from: key.directory, limit: byte / clusterSize + 1)
        return boot.offset(ofCluster: chain[byte / clusterSize]) + UInt64(byte % clusterSize)
    }

    /// A directory's modification time follows its entries (not kept for the root: it has no entry).
    func touchDirectory(_ id: FATNodeID) throws(FATError) {
        guard id != FATVolume.rootID, nodes[id] != nil else { return }
        nodes[id]!.entry.mtime = clock()
        try storeEntry(id)
    }
}
