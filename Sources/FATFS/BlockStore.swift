import Glibc
import Synchronization

/// Where a copy-on-write overlay keeps the blocks written over its base: slot N at byte N * blockSize.
/// The overlay hands slots out 0, 1, 2, ... and never frees one, so a store can be a plain device.
public protocol COWBlockStore: Sendable {
    func readBlock(_ slot: Int, into buffer: UnsafeMutableRawBufferPointer) throws(FATError)
    func writeBlock(_ slot: Int, from buffer: UnsafeRawBufferPointer) throws(FATError)
    func flush() throws(FATError)
}

/// Slots in memory (tests).
public final class MemoryBlockStore: COWBlockStore {
    let blockSize: Int
    let blocks = Mutex<[[UInt8]]>([])

    public init(blockSize: Int) { self.blockSize = blockSize }

    public func readBlock(_ slot: Int, into buffer: UnsafeMutableRawBufferPointer) throws(FATError) {
        let block: [UInt8]? = blocks.withLock { slot < $0.count ? $0[slot] : nil }
        guard let block else { throw FATError(EIO, "COW store has no block \(slot)") }
        block.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<buffer.count])) }
    }

    public func writeBlock(_ slot: Int, from buffer: UnsafeRawBufferPointer) throws(FATError) {
        let block = [UInt8](buffer)
        let ok: Bool = blocks.withLock { blocks in
            if slot == blocks.count { blocks.append(block); return true }
            guard slot < blocks.count else { return false }
            blocks[slot] = block
            return true
        }
        guard ok else { throw FATError(EIO, "COW store block \(slot) written out of order") }
    }

    public func flush() throws(FATError) {}
}

/// Slots on a file descriptor the caller owns and keeps open while this lives (a zram device, a scratch file;
/// in the daemon the sandbox's Teardown owns it).
public final class FileBlockStore: COWBlockStore {
    let fd: Int32
    let blockSize: Int

    public init(fd: Int32, blockSize: Int) {
        self.fd = fd
        self.blockSize = blockSize
    }

    public func readBlock(_ slot: Int, into buffer: UnsafeMutableRawBufferPointer) throws(FATError) {
        try WholeTransfer.read(fd, into: buffer, at: off_t(slot) * off_t(blockSize), failed: "COW store read of block \(slot)",
                               ended: "COW store read of block \(slot): store ends early")
    }

    /// A zram device or a file on a full filesystem: out of room is ENOSPC for the caller.
    public func writeBlock(_ slot: Int, from buffer: UnsafeRawBufferPointer) throws(FATError) {
        try WholeTransfer.write(fd, from: buffer, at: off_t(slot) * off_t(blockSize), failed: "COW store write of block \(slot)")
    }

    public func flush() throws(FATError) {
        if fdatasync(fd) != 0 && errno != EINVAL { throw FATError(errno, "COW store flush failed") }
    }
}
