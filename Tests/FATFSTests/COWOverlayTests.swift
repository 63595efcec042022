import FATFS
import TestSupport
import Glibc
import Testing

@Suite struct COWOverlayTests {
    static func base(_ size: Int) -> (MemoryBlockDevice, [UInt8]) {
        var rng = SplitMix64(seed: UInt64(size))
        let bytes = rng.bytes(size)
        return (MemoryBlockDevice(bytes: bytes, writable: false), bytes)
    }

    func contents(_ d: any FATBlockDevice) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(d.size))
        try out.withUnsafeMutableBytes { b in try d.read(at: 0, into: b) }
        return out
    }

    @Test func writesGoToTheStoreAndReadsMerge() throws {
        let (base, original) = Self.base(10_000)   // not a multiple of the block size
        let overlay = COWOverlay(base: base, store: MemoryBlockStore(blockSize: 4096), blockSize: 4096, limitBytes: 3 * 4096)
        var model = original
        let patch: [UInt8] = Array(repeating: 0xAB, count: 10)
        try patch.withUnsafeBytes { try overlay.write(at: 4090, from: $0) }     // spans blocks 0 and 1
        model.replaceSubrange(4090..<4100, with: patch)
        #expect(overlay.blocksUsed == 2 && overlay.bytesUsed == 8192)
        #expect(try contents(overlay) == model)
        #expect(base.bytes == original, "the base is never written")
        try patch.withUnsafeBytes { try overlay.write(at: 0, from: $0) }        // a block already copied
        model.replaceSubrange(0..<10, with: patch)
        #expect(overlay.blocksUsed == 2)
        try patch.withUnsafeBytes { try overlay.write(at: 9990, from: $0) }     // the short last block
        model.replaceSubrange(9990..<10_000, with: patch)
        #expect(overlay.blocksUsed == 3)
        #expect(try contents(overlay) == model)
        // Partial reads across store and base blocks.
        var part = [UInt8](repeating: 0, count: 5000)
        try part.withUnsafeMutableBytes { try overlay.read(at: 3000, into: $0) }
        #expect(part == Array(model[3000..<8000]))
    }

    @Test func beyondTheLimitIsENOSPCAndChangesNothing() throws {
        let (base, original) = Self.base(65536)
        let overlay = COWOverlay(base: base, store: MemoryBlockStore(blockSize: 4096), blockSize: 4096, limitBytes: 2 * 4096)
        let one: [UInt8] = [1]
        try one.withUnsafeBytes { try overlay.write(at: 0, from: $0) }
        let two = [UInt8](repeating: 2, count: 4097)                             // needs 2 new blocks, 1 left
        #expect(errnoOf { try two.withUnsafeBytes { try overlay.write(at: 8192, from: $0) } } == ENOSPC)
        #expect(overlay.blocksUsed == 1)
        var model = original
        model[0] = 1
        #expect(try contents(overlay) == model)
        #expect(errnoOf { try one.withUnsafeBytes { try overlay.write(at: 65536, from: $0) } } == EIO, "past the end")
    }

    /// A writable volume over the overlay of a read-only image: reading costs no block, changes land in
    /// the store only, the result is a clean FAT volume, and the store's limit is the volume's ENOSPC.
    @Test(.enabled(if: Shell.haveTools, Comment(rawValue: Shell.toolsMissing)))
    func volumeOverOverlay() throws {
        let scratch = Scratch()
        let image = scratch.path + "/fat.img"
        guard FATConfig(bits: 32, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: 40960).make(image) else { return }
        writeFile(scratch.path + "/config.txt", Array("arm_64bit=1\n".utf8))
        #expect(Shell.run(["mcopy", "-i", image, scratch.path + "/config.txt", "::/"]).status == 0)
        let before = readFile(image)
        let file = ImageFile(image, writable: false)
        let overlay = COWOverlay(base: file.device, store: MemoryBlockStore(blockSize: 4096), limitBytes: 8 << 20)
        let volume = try FATVolume(device: overlay, readOnly: false)
        let config = try volume.node("config.txt")
        #expect(try volume.readAll(config.id) == Array("arm_64bit=1\n".utf8))
        _ = try volume.list(FATVolume.rootID)
        #expect(overlay.bytesUsed == 0, "reads and lookups write nothing (the dirty flag waits for a change)")

        _ = try volume.write(config.id, at: 12, Array("enable_uart=1\n".utf8))
        let ssh = try volume.create(parent: FATVolume.rootID, name: "ssh")
        var rng = SplitMix64(seed: 3)
        let data = rng.bytes(1 << 20)
        let big = try volume.create(parent: FATVolume.rootID, name: "kernel8.img")
        _ = try volume.write(big.id, at: 0, data)
        #expect(overlay.bytesUsed > 1 << 20 && overlay.bytesUsed < 1 << 20 + 64 << 10, "\(overlay.bytesUsed)")
        // The budget: 8 MiB of COW, so a file of 8 MiB more cannot be written.
        let huge = rng.bytes(8 << 20)
        #expect(errnoOf { _ = try volume.write(ssh.id, at: 0, huge) } == ENOSPC)
        try volume.flush()
        #expect(readFile(image) == before, "the image is never written")

        // What the overlay holds, as a file: a clean volume with the changes.
        let copy = scratch.path + "/copy.img"
        writeFile(copy, try contents(overlay))
        let check = fsck(copy)
        #expect(check.clean, "fsck.fat -n: \(check.output)")
        let seen = mtoolsTree(copy, scratch: scratch.path)
        #expect(seen["config.txt"] == .some(Array("arm_64bit=1\nenable_uart=1\n".utf8)))
        #expect(seen["kernel8.img"] == .some(data))
    }
}
