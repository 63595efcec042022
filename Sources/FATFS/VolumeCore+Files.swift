import Glibc

/// File contents: reads and writes by contiguous cluster runs, size changes with zero fill.
extension VolumeCore {
    static let maxFileSize: UInt64 = 0xFFFF_FFFF

    func fileNode(_ id: FATNodeID) throws(FATError) -> FATNode {
        let n = try node(id)
        guard !n.isDirectory else { throw FATError(EISDIR, "node \(id) is a directory") }
        return n
    }

    func read(_ id: FATNodeID, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FATError) -> Int {
        let n = try fileNode(id)
        let size = UInt64(n.entry.size)
        guard offset < size, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), size - offset))
        let chain = try clusters(of: id)
        try transfer(chain, offset: offset, count: count) { (device, at, range) throws(FATError) in
            try device.read(at: at, into: UnsafeMutableRawBufferPointer(rebasing: buffer[range]))
        }
        return count
    }

    /// Calls `body` for each contiguous device range covering file bytes offset..<offset+count, with the
    /// matching range of the caller's buffer.
    func transfer(_ chain: [UInt32], offset: UInt64, count: Int,
                  _ body: (any FATBlockDevice, UInt64, Range<Int>) throws(FATError) -> Void) throws(FATError) {
        let cs = UInt64(clusterSize)
        var done = 0
        while done < count {
            let position = offset + UInt64(done)
            var k = Int(position / cs)
            let within = position % cs
            guard k < chain.count else { throw .corrupt("file data beyond its cluster chain") }
            // Extend over clusters that follow each other on disk.
            var length = cs - within
            while done + Int(length) < count, k + 1 < chain.count, chain[k + 1] == chain[k] &+ 1 {
                k += 1
                length += cs
            }
            let n = min(Int(length), count - done)
            let first = chain[Int(position / cs)]
            try body(device, boot.offset(ofCluster: first) + within, done..<done + n)
            done += n
        }
    }

    func write(_ id: FATNodeID, at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(FATError) -> Int {
        _ = try fileNode(id)
        try willChange()
        guard buffer.count > 0 else { return 0 }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(buffer.count))
        guard !overflow, end <= Self.maxFileSize else {
            throw FATError(EFBIG, "write to \(end) bytes: FAT files end at 4 GiB - 1")
        }
        let oldSize = UInt64(nodes[id]!.entry.size)
        do {
            if end > oldSize { try resize(id, to: end, zeroFrom: oldSize, zeroTo: offset) }
            let chain = try clusters(of: id)
            try transfer(chain, offset: offset, count: buffer.count) { (device, at, range) throws(FATError) in
                try device.write(at: at, from: UnsafeRawBufferPointer(rebasing: buffer[range]))
            }
        } catch {
            // A full COW store or a device error mid-write: the clusters added for it go again.
            if UInt64(nodes[id]!.entry.size) > oldSize { try? resize(id, to: oldSize, zeroFrom: oldSize) }
            throw error
        }
        let now = clock()
        nodes[id]!.entry.mtime = now
        nodes[id]!.entry.attributes |= FATShortEntry.archive
        try storeEntry(id)
        return buffer.count
    }

    /// Sets a file's size: clusters freed or allocated (ENOSPC with nothing changed), and the bytes
    /// between the old end and `zeroTo` (default: the new end) zeroed.
    func resize(_ id: FATNodeID, to size: UInt64, zeroFrom oldSize: UInt64, zeroTo: UInt64? = nil) throws(FATError) {
        guard size <= Self.maxFileSize else { throw FATError(EFBIG, "size \(size): FAT files end at 4 GiB - 1") }
        var chain = try clusters(of: id)
        let cs = UInt64(clusterSize)
        let needed = Int((size + cs - 1) / cs)
        if needed < chain.count {
            // Everything after the last kept cluster goes (the on-disk chain may be longer than the size said).
            let rest = try fullChain(chain[needed])
            fat.free(rest)
            if needed == 0 { nodes[id]!.entry.firstCluster = 0 } else { fat.set(chain[needed - 1], fat.endMarker) }
            chain.removeLast(chain.count - needed)
        } else if needed > chain.count {
            if let last = chain.last, let tail = try? fat.next(last) {
                fat.free((try? fullChain(tail)) ?? [])   // an over-long chain: its unused tail goes first
                fat.set(last, fat.endMarker)
            }
            let fresh = try fat.allocate(needed - chain.count, near: chain.last.map { $0 + 1 })
            if let last = chain.last { fat.set(last, fresh[0]) } else { nodes[id]!.entry.firstCluster = fresh[0] }
            chain += fresh
        }
        nodes[id]!.clusters = chain
        nodes[id]!.entry.size = UInt32(size)
        try commitFAT()
        let zeroEnd = min(zeroTo ?? size, size)
        if zeroEnd > oldSize {
            try transfer(chain, offset: oldSize, count: Int(zeroEnd - oldSize)) { (_, at, range) throws(FATError) in
                try zero(at: at, count: range.count)
            }
        }
    }

    func setAttributes(_ id: FATNodeID, size: UInt64?, atime: FATTime?, mtime: FATTime?, mode: UInt32?) throws(FATError) {
        let n = try node(id)
        try willChange()
        if let size {
            guard !n.isDirectory else { throw FATError(EISDIR, "node \(id) is a directory") }
            if size != UInt64(n.entry.size) {
                try resize(id, to: size, zeroFrom: UInt64(n.entry.size))
                nodes[id]!.entry.mtime = clock()
            }
        }
        guard id != FATVolume.rootID else { return }   // the root has no entry to hold times or modes
        if let atime { nodes[id]!.entry.atime = atime }
        if let mtime { nodes[id]!.entry.mtime = mtime }
        if let mode, !n.isDirectory {
            if mode & 0o200 == 0 { nodes[id]!.entry.attributes |= FATShortEntry.readOnly }
            else { nodes[id]!.entry.attributes &= ~FATShortEntry.readOnly }
        }
        try storeEntry(id)
    }
}
