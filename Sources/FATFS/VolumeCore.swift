import Glibc

/// Everything a volume knows.
// @unchecked proof: only ever reached inside FATVolume's Mutex (`core`), so one thread at a time; it is
// Sendable only so the caller's buffers may pass through that lock for the length of a call.
final class VolumeCore: @unchecked Sendable {
    let device: any FATBlockDevice
    let boot: FATBootSector
    var fat: FATTable
    let readOnly: Bool
    let clock: @Sendable () -> FATTime
    var nodes: [FATNodeID: FATNode] = [:]
    var byKey: [EntryKey: FATNodeID] = [:]
    var nextID: FATNodeID = 2
    /// We set the dirty flag on disk (at the first change) and have not cleared it since.
    var markedDirty = false
    var fsInfoValid = false
    var changed = false
    /// Parsed entries of directories read by lookups and readdir; emptied by every change.
    var directoryCache: [UInt32: [FATDirItem]] = [:]

    init(device: any FATBlockDevice, readOnly: Bool, clock: @escaping @Sendable () -> FATTime) throws(FATError) {
        self.device = device
        self.readOnly = readOnly
        self.clock = clock
        guard device.size >= 512 else { throw .badBootSector("partition of \(device.size) bytes") }
        var sector = try device.readBytes(at: 0, count: 512)
        let probe = try FATBootSector(sector, deviceSize: device.size)
        if probe.bytesPerSector > 512 {
            sector = try device.readBytes(at: 0, count: probe.bytesPerSector)
        }
        boot = probe
        let bytes = try device.readBytes(at: boot.fatOffset + UInt64(boot.activeFAT) * UInt64(boot.fatBytes), count: boot.fatBytes)
        fat = FATTable(type: boot.type, clusterCount: boot.clusterCount, bytesPerSector: boot.bytesPerSector, bytes: bytes)
        if let info = boot.fsInfoSector {
            let s = try device.readBytes(at: UInt64(info) * UInt64(boot.bytesPerSector), count: 512)
            fsInfoValid = s.le32(0) == 0x4161_5252 && s.le32(484) == 0x6141_7272 && s.le32(508) == 0xAA55_0000
            if fsInfoValid { let next = s.le32(492); if fat.isValidCluster(next) { fat.hint = next } }
        }
        var root = FATShortEntry.new(name: Array("           ".utf8), attributes: FATShortEntry.directory,
                                     cluster: boot.type == .fat32 ? boot.rootCluster : 0, at: FATTime(seconds: 0))
        root.raw.replaceSubrange(13..<26, with: [UInt8](repeating: 0, count: 13))
        nodes[FATVolume.rootID] = FATNode(parent: FATVolume.rootID, key: nil, firstSlot: 0, entry: root, lookups: 1)
    }

    var info: FATVolumeInfo {
        FATVolumeInfo(type: boot.type, bytesPerSector: boot.bytesPerSector, sectorsPerCluster: boot.sectorsPerCluster,
                      clusterSize: boot.clusterSize, clusterCount: boot.clusterCount, fatCount: boot.fatCount,
                      label: boot.label, serial: boot.serial, wasDirty: boot.state & 1 != 0)
    }

    var clusterSize: Int { boot.clusterSize }

    // MARK: Changes

    /// Before the first change: EROFS on a read-only volume, and the dirty flag set on disk.
    func willChange() throws(FATError) {
        guard !readOnly else { throw .readOnly }
        directoryCache.removeAll()
        changed = true
        guard !markedDirty, boot.state & 1 == 0 else { return }
        try device.writeBytes(at: UInt64(boot.stateOffset), [boot.state | 1])
        markedDirty = true
    }

    /// After a change: the FAT sectors it touched go to every copy.
    func commitFAT() throws(FATError) { try fat.commit(to: device, boot: boot) }

    func flush() throws(FATError) {
        if changed, !readOnly {
            try commitFAT()
            if fsInfoValid, let info = boot.fsInfoSector {
                var fields = [UInt8](repeating: 0, count: 8)
                fields.setLE32(0, UInt32(fat.freeCount))
                fields.setLE32(4, fat.hint)
                try device.writeBytes(at: UInt64(info) * UInt64(boot.bytesPerSector) + 488, fields)
            }
            if markedDirty {
                try device.writeBytes(at: UInt64(boot.stateOffset), [boot.state & ~1])
                markedDirty = false
            }
            changed = false
        }
        try device.flush()
    }

    // MARK: Directories on disk

    /// The first cluster a directory node's entries are keyed by (0 = fixed root).
    func directoryCluster(_ node: FATNode) -> UInt32 { node.entry.firstCluster }

    func readDirectory(cluster: UInt32) throws(FATError) -> FATDirectory {
        if cluster == 0 {
            guard boot.type != .fat32 else { throw .corrupt("directory entry with cluster 0 on FAT32") }
            let length = boot.rootEntryCount * 32
            let bytes = try device.readBytes(at: boot.rootDirOffset, count: length)
            return FATDirectory(cluster: 0, extents: [(boot.rootDirOffset, length)], bytes: bytes)
        }
        let maxClusters = max(1, FATDirectory.maxEntries * 32 / clusterSize)
        let chain = try fat.chain(from: cluster, maxLength: maxClusters)
        var dir = FATDirectory(cluster: cluster, extents: [], bytes: [])
        dir.bytes.reserveCapacity(chain.count * clusterSize)
        for run in runs(chain) {
            let offset = boot.offset(ofCluster: run.first)
            dir.bytes += try device.readBytes(at: offset, count: run.count * clusterSize)
            for k in 0..<run.count { dir.extents.append((offset + UInt64(k * clusterSize), clusterSize)) }
        }
        return dir
    }

    /// A directory's items for lookups and readdir, from the cache when nothing changed since.
    func cachedItems(cluster: UInt32) throws(FATError) -> [FATDirItem] {
        if let items = directoryCache[cluster] { return items }
        let items = try readDirectory(cluster: cluster).items()
        if directoryCache.count >= 256 { directoryCache.removeAll() }
        directoryCache[cluster] = items
        return items
    }

    /// Contiguous runs of a cluster list.
    func runs(_ clusters: some Collection<UInt32>) -> [(first: UInt32, count: Int)] {
        var out: [(first: UInt32, count: Int)] = []
        for c in clusters {
            if let last = out.last, last.first &+ UInt32(last.count) == c { out[out.count - 1].count += 1 }
            else { out.append((c, 1)) }
        }
        return out
    }

    func writeEntry(_ bytes: [UInt8], in dir: inout FATDirectory, at index: Int) throws(FATError) {
        try device.writeBytes(at: dir.deviceOffset(ofEntry: index), bytes)
        dir.bytes.replaceSubrange(index * 32..<index * 32 + bytes.count, with: bytes)
    }

    /// Writes zeros over `count` bytes at a device offset, a cluster at a time.
    func zero(at offset: UInt64, count: Int) throws(FATError) {
        let chunk = [UInt8](repeating: 0, count: min(count, max(clusterSize, 65536)))
        var done = 0
        while done < count {
            let n = min(chunk.count, count - done)
            try chunk.withBytes { (b) throws(FATError) in
                try device.write(at: offset + UInt64(done), from: UnsafeRawBufferPointer(rebasing: b[0..<n]))
            }
            done += n
        }
    }
}
