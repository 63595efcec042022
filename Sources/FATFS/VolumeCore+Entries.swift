import Glibc

/// Directory changes: new entries (long name + 8.3 alias in free slots, the directory grown when
/// needed), removal, rename.
extension VolumeCore {
    /// The first of `count` consecutive free slots, growing a cluster directory (zeroed clusters) when
    /// none are left. ENOSPC for a full fixed root or a directory at 65536 entries.
    func freeSlots(_ count: Int, in dir: inout FATDirectory, of dirID: FATNodeID) throws(FATError) -> Int {
        let end = dir.endIndex
        var run = 0
        for i in 0..<end {
            if dir.bytes[i * 32] == 0xE5 {
                run += 1
                if run == count { return i - count + 1 }
            } else {
                run = 0
            }
        }
        let start = end - run   // deleted entries just before the end marker join the free tail
        let available = dir.entryCount - start
        if available >= count { return start }
        guard dir.cluster != 0 else {
            throw .noSpace("root directory full (\(boot.rootEntryCount) entries)")
        }
        let grow = ((count - available) * 32 + clusterSize - 1) / clusterSize
        guard dir.entryCount + grow * clusterSize / 32 <= FATDirectory.maxEntries else {
            throw .noSpace("directory full (\(FATDirectory.maxEntries) entries)")
        }
        let chain = try clusters(of: dirID)
        guard let last = chain.last else { throw .corrupt("directory without clusters") }
        let fresh = try fat.allocate(grow, near: last + 1)
        fat.set(last, fresh[0])
        try commitFAT()
        for c in fresh {
            let offset = boot.offset(ofCluster: c)
            try zero(at: offset, count: clusterSize)
            dir.extents.append((offset, clusterSize))
            dir.bytes += [UInt8](repeating: 0, count: clusterSize)
        }
        nodes[dirID]!.clusters = chain + fresh
        return start
    }

    /// Writes a new entry named `units` (long-name entries when the alias needs them) into `dir`.
    /// `entry` gives every field but the name; entries at `replacing` indices do not block an alias.
    func addEntry(_ units: [UInt16], _ entry: FATShortEntry, in dir: inout FATDirectory, of dirID: FATNodeID,
                  replacing: Set<Int> = []) throws(FATError) -> FATDirItem {
        let taken = Set(dir.items().filter { !replacing.contains($0.index) }.map { Array($0.entry.raw[0..<11]) })
        let alias = try ShortName.alias(for: units) { taken.contains(Array($0)) }
        var entry = entry
        entry.raw.replaceSubrange(0..<11, with: alias.bytes)
        entry.raw[12] = 0
        var entries: [[UInt8]] = []
        if alias.needsLongName { entries = LongName.entries(for: units, checksum: LongName.checksum(alias.bytes[...])) }
        entries.append(entry.raw)
        let start = try freeSlots(entries.count, in: &dir, of: dirID)
        let wasEnd = dir.endIndex
        for (k, e) in entries.enumerated() { try writeEntry(e, in: &dir, at: start + k) }
        // Past the old end marker, what follows the new entries must still read as the end.
        let after = start + entries.count
        if after > wasEnd, after < dir.entryCount, dir.bytes[after * 32] != 0 { try writeEntry([0], in: &dir, at: after) }
        return FATDirItem(index: after - 1, firstSlot: start, name: String(decoding: units, as: UTF16.self), entry: entry)
    }

    func deleteSlots(_ item: FATDirItem, in dir: inout FATDirectory) throws(FATError) {
        for i in item.firstSlot...item.index { try writeEntry([0xE5], in: &dir, at: i) }
    }

    func create(parent parentID: FATNodeID, name: String, mode: UInt32, directory: Bool) throws(FATError) -> FATAttr {
        let units = try FATName.validate(name)
        let parent = try directoryNode(parentID)
        try willChange()
        var dir = try readDirectory(cluster: directoryCluster(parent))
        guard try find(name, in: dir) == nil else { throw FATError(EEXIST, "\"\(name)\" exists") }
        let now = clock()
        var cluster: UInt32 = 0
        if directory {
            cluster = try fat.allocate(1)[0]
            do {
                try commitFAT()
                let offset = boot.offset(ofCluster: cluster)
                try zero(at: offset, count: clusterSize)
                let dot = FATShortEntry.new(name: Array(".          ".utf8), attributes: FATShortEntry.directory, cluster: cluster, at: now)
                let up = FATShortEntry.new(name: Array("..         ".utf8), attributes: FATShortEntry.directory,
                                           cluster: parentID == FATVolume.rootID ? 0 : parent.entry.firstCluster, at: now)
                try device.writeBytes(at: offset, dot.raw + up.raw)
            } catch {
                fat.free([cluster]); try? commitFAT(); throw error
            }
        }
        let attributeBits = directory ? FATShortEntry.directory
            : FATShortEntry.archive | (mode & 0o200 == 0 ? FATShortEntry.readOnly : 0)
        let item: FATDirItem
        do {
            item = try addEntry(units, .new(name: [], attributes: attributeBits, cluster: cluster, at: now), in: &dir, of: parentID)
        } catch {
            if directory { fat.free([cluster]); try? commitFAT() }
            throw error
        }
        try touchDirectory(parentID)
        let id = try nodeID(for: item, in: parentID, lookups: 1)
        return try attributes(id)
    }

    func remove(parent parentID: FATNodeID, name: String, directory: Bool) throws(FATError) {
        let parent = try directoryNode(parentID)
        try willChange()
        var dir = try readDirectory(cluster: directoryCluster(parent))
        guard let item = try find(name, in: dir) else { throw .notFound(name) }
        if directory {
            guard item.entry.isDirectory else { throw FATError(ENOTDIR, "\"\(name)\" is not a directory") }
            try checkNoCycle(item.entry.firstCluster, under: parentID)
            guard try readDirectory(cluster: item.entry.firstCluster).items().isEmpty else {
                throw FATError(ENOTEMPTY, "directory \"\(name)\" is not empty")
            }
        } else {
            guard !item.entry.isDirectory else { throw FATError(EISDIR, "\"\(name)\" is a directory") }
        }
        try release(EntryKey(directory: directoryCluster(parent), index: item.index), item: item) { () throws(FATError) in
            try deleteSlots(item, in: &dir)
        }
        try touchDirectory(parentID)
    }

    /// Removes an entry (through `delete`) and frees its clusters; a file a node still holds keeps
    /// them until the node is forgotten. The chain is checked first, so a corrupt one changes nothing.
    func release(_ key: EntryKey, item: FATDirItem, delete: () throws(FATError) -> Void) throws(FATError) {
        let id = byKey[key]
        let first = id.map { nodes[$0]!.entry.firstCluster } ?? item.entry.firstCluster
        let inUse = id != nil && !item.entry.isDirectory
        let chain = try fullChain(first)
        try delete()
        if let id {
            byKey[key] = nil
            nodes[id]!.key = nil
            nodes[id]!.unlinked = true
            if item.entry.isDirectory { nodes[id]!.clusters = [] }
        }
        if !inUse { fat.free(chain) }
        try commitFAT()
        if let id { removeIfUnused(id) }
    }

    func rename(parent parentID: FATNodeID, name: String, newParent newParentID: FATNodeID, newName: String,
                flags: FATRenameFlags) throws(FATError) {
        guard !flags.contains(.exchange) else { throw FATError(EINVAL, "RENAME_EXCHANGE is not supported on FAT") }
        let units = try FATName.validate(newName)
        let parent = try directoryNode(parentID), newParent = try directoryNode(newParentID)
        try willChange()
        let srcCluster = directoryCluster(parent), dstCluster = directoryCluster(newParent)
        let sameDir = srcCluster == dstCluster
        let srcDir = try readDirectory(cluster: srcCluster)
        guard let src = try find(name, in: srcDir) else { throw .notFound(name) }
        var dir = sameDir ? srcDir : try readDirectory(cluster: dstCluster)
        // Not into itself or below it (checked first, as the VFS does).
        if src.entry.isDirectory, !sameDir {
            var id = newParentID
            for _ in 0...nodes.count {
                let n = try node(id)
                if directoryCluster(n) == src.entry.firstCluster {
                    throw FATError(EINVAL, "cannot move directory \"\(name)\" into itself")
                }
                if id == FATVolume.rootID { break }
                id = n.parent
            }
        }
        var target = try find(newName, in: dir)
        if sameDir, target?.index == src.index {
            if src.name == String(decoding: units, as: UTF16.self) { return }   // the same name: nothing to do
            target = nil                                                       // a change of case
        }
        if let target {
            guard !flags.contains(.noReplace) else { throw FATError(EEXIST, "\"\(newName)\" exists") }
            if src.entry.isDirectory && !target.entry.isDirectory { throw FATError(ENOTDIR, "\"\(newName)\" is not a directory") }
            if !src.entry.isDirectory && target.entry.isDirectory { throw FATError(EISDIR, "\"\(newName)\" is a directory") }
            if target.entry.isDirectory {
                try checkNoCycle(target.entry.firstCluster, under: newParentID)
                guard try readDirectory(cluster: target.entry.firstCluster).items().isEmpty else {
                    throw FATError(ENOTEMPTY, "directory \"\(newName)\" is not empty")
                }
            }
        }
        let srcKey = EntryKey(directory: srcCluster, index: src.index)
        let srcID = byKey[srcKey]
        let entry = srcID.map { nodes[$0]!.entry } ?? src.entry
        var replacing: Set<Int> = target.map { [$0.index] } ?? []
        if sameDir { replacing.insert(src.index) }
        let added = try addEntry(units, entry, in: &dir, of: newParentID, replacing: replacing)
        if let target {
            try release(EntryKey(directory: dstCluster, index: target.index), item: target) { () throws(FATError) in
                try deleteSlots(target, in: &dir)
            }
        }
        if sameDir {
            try deleteSlots(src, in: &dir)
        } else {
            var old = srcDir
            try deleteSlots(src, in: &old)
            if entry.isDirectory {
                // The moved directory's ".." names its new parent (0 for the root).
                var moved = try readDirectory(cluster: entry.firstCluster)
                if moved.entryCount > 1, moved.entry(1).prefix(2).elementsEqual([0x2E, 0x2E]) {
                    var up = FATShortEntry(Array(moved.entry(1)))
                    up.firstCluster = newParentID == FATVolume.rootID ? 0 : newParent.entry.firstCluster
                    try writeEntry(up.raw, in: &moved, at: 1)
                }
            }
        }
        var oldParent = parentID
        if let srcID {
            let newKey = EntryKey(directory: dstCluster, index: added.index)
            byKey[srcKey] = nil
            byKey[newKey] = srcID
            nodes[srcID]!.key = newKey
            nodes[srcID]!.firstSlot = added.firstSlot
            nodes[srcID]!.entry = added.entry
            oldParent = nodes[srcID]!.parent
            if oldParent != newParentID {
                nodes[srcID]!.parent = newParentID
                nodes[newParentID]!.children += 1
                nodes[oldParent]!.children -= 1
            }
        }
        try touchDirectory(parentID)
        if !sameDir { try touchDirectory(newParentID) }
        removeIfUnused(oldParent)   // last: it may drop the old parent (and unused ancestors) from the table
    }

    func readDirectory(_ id: FATNodeID, from offset: UInt64, limit: Int) throws(FATError) -> [FATDirectoryEntry] {
        try readDirectory(id, from: offset, limit: limit, plus: false).map(\.entry)
    }

    /// With `plus`, each entry but `.` and `..` also gets its node and one lookup, as `lookup` gives them
    /// (the caller forgets the ones it does not hand out); an entry whose node cannot be made (a damaged
    /// one: its lookup answers the error) comes without attributes.
    func readDirectory(_ id: FATNodeID, from offset: UInt64, limit: Int,
                       plus: Bool) throws(FATError) -> [(entry: FATDirectoryEntry, attr: FATAttr?)] {
        let n = try node(id)
        guard n.isDirectory else { throw FATError(ENOTDIR, "node \(id) is not a directory") }
        var out: [(entry: FATDirectoryEntry, attr: FATAttr?)] = []
        if offset < 1 { out.append((FATDirectoryEntry(name: ".", isDirectory: true, nextOffset: 1), nil)) }
        if offset < 2 { out.append((FATDirectoryEntry(name: "..", isDirectory: true, nextOffset: 2), nil)) }
        guard !n.unlinked else { return Array(out.prefix(limit)) }
        let start = offset >= 2 ? offset - 2 : 0
        for item in try cachedItems(cluster: directoryCluster(n)) where UInt64(item.index) >= start {
            if out.count >= limit { break }
            var attr: FATAttr?
            if plus, let child = try? nodeID(for: item, in: id, lookups: 1) {
                attr = try? attributes(child)
                if attr == nil { forget(child, count: 1) }
            }
            out.append((FATDirectoryEntry(name: item.name, isDirectory: item.entry.isDirectory, nextOffset: UInt64(item.index) + 3), attr))
        }
        return Array(out.prefix(limit))
    }
}
