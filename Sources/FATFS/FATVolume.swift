import Synchronization

/// A FAT12/16/32 volume served to a FUSE layer. One lock serialises every call, so FUSE worker threads
/// may call concurrently. Errors carry the errno to reply with; on-disk content never makes it trap.
/// See FATFS-API.md for the conventions (node IDs, readdir offsets, names, times).
public final class FATVolume: Sendable {
    public static let rootID: FATNodeID = 1

    let core: Mutex<VolumeCore>
    public let info: FATVolumeInfo

    /// Reads and validates the boot sector, FSInfo and the active FAT. EINVAL for a bad BPB.
    public init(device: any FATBlockDevice, readOnly: Bool,
                clock: @escaping @Sendable () -> FATTime = { FATTime.now() }) throws(FATError) {
        let core = try VolumeCore(device: device, readOnly: readOnly, clock: clock)
        var info = core.info
        if let label = try? core.rootLabel() { info.label = label }
        self.info = info
        self.core = Mutex(core)
    }

    func locked<T: Sendable>(_ body: (VolumeCore) throws(FATError) -> T) throws(FATError) -> T {
        try core.withLock { (core) throws(FATError) -> T in try body(core) }
    }

    public func lookup(parent: FATNodeID, name: String) throws(FATError) -> FATAttr {
        try locked { (c) throws(FATError) in
            let parentNode = try c.directoryNode(parent)
            let items = try c.cachedItems(cluster: c.directoryCluster(parentNode))
            guard let item = try c.find(name, in: items) else { throw .notFound(name) }
            return try c.attributes(try c.nodeID(for: item, in: parent, lookups: 1))
        }
    }

    public func forget(_ id: FATNodeID, count: UInt64 = 1) {
        core.withLock { $0.forget(id, count: count) }
    }

    public func getattr(_ id: FATNodeID) throws(FATError) -> FATAttr {
        try locked { (c) throws(FATError) in try c.attributes(id) }
    }

    public func readDirectory(_ id: FATNodeID, from offset: UInt64, limit: Int = Int.max) throws(FATError) -> [FATDirectoryEntry] {
        try locked { (c) throws(FATError) in try c.readDirectory(id, from: offset, limit: limit) }
    }

    /// readdir with attributes (readdirplus): every entry but `.` and `..` that comes with attributes holds
    /// one lookup of its node, as from `lookup`; forget those not handed on. Damaged entries come without.
    public func readDirectoryPlus(_ id: FATNodeID, from offset: UInt64,
                                  limit: Int = Int.max) throws(FATError) -> [(entry: FATDirectoryEntry, attr: FATAttr?)] {
        try core.withLock { (c) throws(FATError) in try c.readDirectory(id, from: offset, limit: limit, plus: true) }
    }

    public func read(_ id: FATNodeID, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FATError) -> Int {
        try core.withLock { (c) throws(FATError) -> Int in try c.read(id, at: offset, into: buffer) }
    }

    public func read(_ id: FATNodeID, at offset: UInt64, count: Int) throws(FATError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max(0, count))
        let n = try bytes.withMutableBytes { (b) throws(FATError) -> Int in try read(id, at: offset, into: b) }
        bytes.removeLast(bytes.count - n)
        return bytes
    }

    public func write(_ id: FATNodeID, at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(FATError) -> Int {
        try core.withLock { (c) throws(FATError) -> Int in try c.write(id, at: offset, from: buffer) }
    }

    public func write(_ id: FATNodeID, at offset: UInt64, _ bytes: [UInt8]) throws(FATError) -> Int {
        try bytes.withBytes { (b) throws(FATError) -> Int in try write(id, at: offset, from: b) }
    }

    public func create(parent: FATNodeID, name: String, mode: UInt32 = 0o755) throws(FATError) -> FATAttr {
        try locked { (c) throws(FATError) in try c.create(parent: parent, name: name, mode: mode, directory: false) }
    }

    public func mkdir(parent: FATNodeID, name: String, mode: UInt32 = 0o755) throws(FATError) -> FATAttr {
        try locked { (c) throws(FATError) in try c.create(parent: parent, name: name, mode: mode, directory: true) }
    }

    public func unlink(parent: FATNodeID, name: String) throws(FATError) {
        try locked { (c) throws(FATError) in try c.remove(parent: parent, name: name, directory: false) }
    }

    public func rmdir(parent: FATNodeID, name: String) throws(FATError) {
        try locked { (c) throws(FATError) in try c.remove(parent: parent, name: name, directory: true) }
    }

    public func rename(parent: FATNodeID, name: String, newParent: FATNodeID, newName: String,
                       flags: FATRenameFlags = []) throws(FATError) {
        try locked { (c) throws(FATError) in
            try c.rename(parent: parent, name: name, newParent: newParent, newName: newName, flags: flags)
        }
    }

    public func setAttributes(_ id: FATNodeID, size: UInt64? = nil, atime: FATTime? = nil,
                              mtime: FATTime? = nil, mode: UInt32? = nil) throws(FATError) -> FATAttr {
        try locked { (c) throws(FATError) in
            if size != nil || atime != nil || mtime != nil || mode != nil {
                try c.setAttributes(id, size: size, atime: atime, mtime: mtime, mode: mode)
            }
            return try c.attributes(id)
        }
    }

    public func statfs() -> FATStatfs {
        core.withLock { c in
            FATStatfs(blockSize: UInt32(c.clusterSize), fragmentSize: UInt32(c.clusterSize),
                      blocks: UInt64(c.boot.clusterCount), freeBlocks: UInt64(c.fat.freeCount),
                      availableBlocks: UInt64(c.fat.freeCount), files: 0, freeFiles: 0, nameMax: 255)
        }
    }

    /// FSInfo written, the dirty flag cleared (unless it was set before we opened the volume), the device flushed.
    public func flush() throws(FATError) {
        try locked { (c) throws(FATError) in try c.flush() }
    }
}

extension VolumeCore {
    /// The volume label entry of the root directory (what mlabel and Windows change), if any.
    func rootLabel() throws(FATError) -> String? {
        let dir = try readDirectory(cluster: directoryCluster(nodes[FATVolume.rootID]!))
        for i in 0..<dir.entryCount {
            let e = dir.entry(i)
            let first = e[e.startIndex], attr = e[e.startIndex + 11]
            if first == 0 { break }
            if first != 0xE5, attr & 0x3F != 0x0F, attr & 0x08 != 0 {
                let text = ShortName.display(e[e.startIndex..<e.startIndex + 11], caseFlags: 0)
                return text.replacingSpaces()
            }
        }
        return nil
    }
}

extension String {
    /// An 11-byte label as shown: the 8.3 display inserts a dot; labels have none and keep inner spaces.
    func replacingSpaces() -> String? {
        let trimmed = String(self.reversed().drop { $0 == " " }.reversed())
        return trimmed.isEmpty ? nil : trimmed
    }
}
