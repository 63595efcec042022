import Glibc
import Synchronization

/// Block-level copy-on-write over a read-only base: a written block is copied into the store (whole,
/// after a read of the rest for a partial write) and read from there afterwards; base is never written.
/// `bytesUsed` is what the sandbox's COW budget counts; a write that needs blocks beyond `limitBytes`
/// throws ENOSPC before anything changes. The limit may be raised while the overlay is used (up to what the
/// store holds: the caller's business), never lowered.
public final class COWOverlay: FATBlockDevice {
    struct State {
        var slots: [Int: Int] = [:]   // partition block -> store slot
        var used = 0
        var limitBytes: UInt64
    }

    let base: any FATBlockDevice
    let store: any COWBlockStore
    let blockSize: Int
    let state: Mutex<State>
    public var size: UInt64 { base.size }

    public init(base: any FATBlockDevice, store: any COWBlockStore, blockSize: Int = 4096, limitBytes: UInt64) {
        self.base = base
        self.store = store
        self.blockSize = max(512, blockSize)
        self.state = Mutex(State(limitBytes: limitBytes))
    }

    /// The most the store may hold now.
    public var limitBytes: UInt64 { state.withLock { $0.limitBytes } }

    /// Raises the limit to `bytes` (a smaller value changes nothing); returns the limit in force.
    @discardableResult
    public func raiseLimit(to bytes: UInt64) -> UInt64 {
        state.withLock { state in
            state.limitBytes = max(state.limitBytes, bytes)
            return state.limitBytes
        }
    }

    public var blocksUsed: Int { state.withLock { $0.used } }
    public var bytesUsed: UInt64 { UInt64(blocksUsed) * UInt64(blockSize) }

    /// Bytes of block `b` that lie inside the partition (the last block may be short).
    func length(of block: Int) -> Int {
        Int(min(UInt64(blockSize), size - UInt64(block) * UInt64(blockSize)))
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FATError) {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        try state.withLock { (state) throws(FATError) in
            var position = offset
            var done = 0
            var scratch = [UInt8](repeating: 0, count: blockSize)
            while done < buffer.count {
                let block = Int(position / UInt64(blockSize))
                let within = Int(position % UInt64(blockSize))
                if let slot = state.slots[block] {
                    let n = min(blockSize - within, buffer.count - done)
                    try scratch.withMutableBytes { (s) throws(FATError) in try store.readBlock(slot, into: s) }
                    scratch.withUnsafeBytes { s in
                        UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
                            .copyMemory(from: UnsafeRawBufferPointer(rebasing: s[within..<within + n]))
                    }
                    done += n
                    position += UInt64(n)
                } else {
                    // One base read for the whole run of blocks not in the store.
                    var end = block + 1
                    while UInt64(end) * UInt64(blockSize) < offset + UInt64(buffer.count), state.slots[end] == nil { end += 1 }
                    let runEnd = min(UInt64(end) * UInt64(blockSize), offset + UInt64(buffer.count))
                    let n = Int(runEnd - position)
                    try base.read(at: position, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n]))
                    done += n
                    position += UInt64(n)
                }
            }
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(FATError) {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        try state.withLock { (state) throws(FATError) in
            let first = Int(offset / UInt64(blockSize))
            let last = Int((offset + UInt64(buffer.count) - 1) / UInt64(blockSize))
            let fresh = (first...last).reduce(0) { $0 + (state.slots[$1] == nil ? 1 : 0) }
            guard UInt64(state.used + fresh) * UInt64(blockSize) <= state.limitBytes else {
                throw FATError.noSpace("COW store full: \(state.used * blockSize) of \(state.limitBytes) bytes used, "
                    + "\(fresh * blockSize) more needed")
            }
            var scratch = [UInt8](repeating: 0, count: blockSize)
            for block in first...last {
                let blockStart = UInt64(block) * UInt64(blockSize)
                let from = max(offset, blockStart)
                let to = min(offset + UInt64(buffer.count), blockStart + UInt64(length(of: block)))
                let slot = state.slots[block]
                if to - from < UInt64(length(of: block)) {
                    // Partial block: start from its current content.
                    try scratch.withMutableBytes { (s) throws(FATError) in
                        if let slot {
                            try store.readBlock(slot, into: s)
                        } else {
                            try base.read(at: blockStart, into: UnsafeMutableRawBufferPointer(rebasing: s[0..<length(of: block)]))
                        }
                    }
                }
                scratch.withUnsafeMutableBytes { s in
                    UnsafeMutableRawBufferPointer(rebasing: s[Int(from - blockStart)..<Int(to - blockStart)])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(to - offset)]))
                }
                let target = slot ?? state.used
                try scratch.withBytes { (s) throws(FATError) in try store.writeBlock(target, from: s) }
                if slot == nil {
                    state.slots[block] = target
                    state.used += 1
                }
            }
        }
    }

    public func flush() throws(FATError) { try store.flush() }
}
