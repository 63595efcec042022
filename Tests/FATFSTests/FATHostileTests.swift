import Glibc
import Testing
@testable import FATFS
import TestSupport

/// Corrupt structures and bad names: each is a typed error with the right errno, never a trap.
@Suite(.enabled(if: Shell.haveTools, Comment(rawValue: Shell.toolsMissing)))
struct FATHostileTests {
    /// A FAT16 or FAT32 image with a 3-cluster file, a directory a/b and a file inside, in memory.
    static func image(bits: Int) -> [UInt8] {
        let scratch = Scratch()
        let path = scratch.path + "/fat.img"
        let config = FATConfig(bits: bits, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: bits == 32 ? 40960 : 16384)
        guard config.make(path) else { return [] }
        var rng = SplitMix64(seed: 5)
        writeFile(scratch.path + "/big.bin", rng.bytes(1500))
        Shell.run(["mcopy", "-i", path, scratch.path + "/big.bin", "::/"])
        Shell.run(["mmd", "-i", path, "::/a", "::/a/b"])
        Shell.run(["mcopy", "-i", path, scratch.path + "/big.bin", "::/a/b/inner.bin"])
        return readFile(path)
    }

    static let fat16 = image(bits: 16)
    static let fat32 = image(bits: 32)

    static func open(_ bytes: [UInt8], readOnly: Bool = true) throws(FATError) -> FATVolume {
        try FATVolume(device: MemoryBlockDevice(bytes: bytes), readOnly: readOnly)
    }

    /// First cluster and directory-entry offset of a path, as the volume sees them.
    static func locate(_ bytes: [UInt8], _ path: String) throws -> (cluster: UInt32, entry: UInt64, boot: FATBootSector) {
        let volume = try open(bytes)
        let id = try volume.node(path).id
        return try volume.core.withLock { (c) throws(FATError) in
            (c.nodes[id]!.entry.firstCluster, try c.entryOffset(c.nodes[id]!.key!), c.boot)
        }
    }

    static func setFAT(_ bytes: inout [UInt8], _ boot: FATBootSector, _ cluster: UInt32, _ value: UInt32) {
        for copy in 0..<boot.fatCount {
            let base = Int(boot.fatOffset) + copy * boot.fatBytes
            if boot.type == .fat32 { bytes.setLE32(base + 4 * Int(cluster), value) } else { bytes.setLE16(base + 2 * Int(cluster), UInt16(value)) }
        }
    }

    static let bpbCorruptions: [(String, Int, Int, UInt32)] = [   // what, FAT bits, offset, le16/le32 value
        ("0 bytes per sector", 16, 11, 0), ("1000 bytes per sector", 16, 11, 1000), ("8192 bytes per sector", 32, 11, 8192),
        ("0 sectors per cluster", 16, 13, 0), ("3 sectors per cluster", 32, 13, 3),
        ("no reserved sector", 16, 14, 0), ("no FAT", 32, 16, 0), ("bad media byte", 16, 21, 0x12),
        ("more sectors than the partition", 32, 32, 0x7FFF_FFFF), ("FAT16 size 0", 16, 22, 0),
        ("FAT32 size 0", 32, 36, 0), ("no root entries on FAT16", 16, 17, 0), ("odd root entries", 16, 17, 7),
        ("no jump", 16, 0, 0), ("no 0x55AA", 32, 510, 0), ("FAT32 version 1", 32, 42, 1),
        ("FAT32 root cluster 0", 32, 44, 0), ("FAT32 root cluster past the end", 32, 44, 0x0FFF_FF00),
        ("FAT16 layout with FAT32's cluster count", 16, 19, 0),
    ]

    @Test(arguments: bpbCorruptions.indices)
    func corruptBootSectorIsEINVAL(index: Int) throws {
        let (what, bits, offset, value) = Self.bpbCorruptions[index]
        var bytes = bits == 32 ? Self.fat32 : Self.fat16
        if offset == 13 || offset == 16 || offset == 21 { bytes[offset] = UInt8(value) }
        else if offset == 32 || offset == 36 || offset == 44 { bytes.setLE32(offset, value) }
        else { bytes.setLE16(offset, UInt16(value)) }
        if what.hasPrefix("FAT16 layout") {   // 80,000 sectors of one cluster each: more than FAT16 addresses
            bytes.setLE32(32, 80_000)
            bytes += [UInt8](repeating: 0, count: 80_000 * 512 - bytes.count)
        }
        #expect(throws: FATError.self, "\(what)") { _ = try Self.open(bytes) }
        do { _ = try Self.open(bytes) } catch { #expect(error.errno == EINVAL, "\(what): \(error)") }
    }

    @Test(arguments: [16, 32])
    func brokenChainsAreEIO(bits: Int) throws {
        let clean = bits == 32 ? Self.fat32 : Self.fat16
        let (c, _, boot) = try Self.locate(clean, "big.bin")
        let cases: [(String, UInt32)] = [("loop", c), ("past the end", boot.type == .fat32 ? 0x0FFF_FF00 : 0xFF00),
                                         ("free", 0), ("bad", boot.type == .fat32 ? 0x0FFF_FFF7 : 0xFFF7), ("reserved", 1)]
        for (what, value) in cases {
            var bytes = clean
            Self.setFAT(&bytes, boot, c + 1, value)
            let volume = try Self.open(bytes, readOnly: false)
            let id = try volume.node("big.bin").id
            #expect(errnoOf { _ = try volume.read(id, at: 0, count: 1500) } == EIO, "\(what)")
            #expect(errnoOf { try volume.unlink(parent: FATVolume.rootID, name: "big.bin") } == EIO, "\(what)")
            #expect(try volume.node("a/b/inner.bin").size == 1500, "the rest keeps working")
        }
        // A size the chain does not cover.
        var bytes = clean
        let (_, entry, _) = try Self.locate(clean, "big.bin")
        bytes.setLE32(Int(entry) + 28, 1_000_000)
        let volume = try Self.open(bytes)
        #expect(errnoOf { _ = try volume.read(volume.node("big.bin").id, at: 0, count: 10) } == EIO)
    }

    @Test(arguments: [16, 32])
    func directoryCyclesAreEIO(bits: Int) throws {
        let clean = bits == 32 ? Self.fat32 : Self.fat16
        let (a, _, boot) = try Self.locate(clean, "a")
        let (_, bEntry, _) = try Self.locate(clean, "a/b")
        var targets: [UInt32] = [a, 0x0FFF_0000]
        if boot.type == .fat32 { targets.append(boot.rootCluster) }
        for target in targets {
            var bytes = clean
            bytes.setLE16(Int(bEntry) + 26, UInt16(truncatingIfNeeded: target))
            bytes.setLE16(Int(bEntry) + 20, UInt16(truncatingIfNeeded: target >> 16))
            let volume = try Self.open(bytes, readOnly: false)
            #expect(errnoOf { _ = try volume.node("a/b") } == EIO, "b -> cluster \(target)")
            #expect(errnoOf { try volume.rmdir(parent: volume.node("a").id, name: "b") } == EIO)
            #expect(try volume.list(volume.node("a").id).map(\.name) == ["b"], "the parent still lists")
        }
        // A directory whose own chain loops.
        var bytes = clean
        Self.setFAT(&bytes, boot, a, a)
        let volume = try Self.open(bytes)
        #expect(errnoOf { _ = try volume.list(volume.node("a").id) } == EIO)
        #expect(try volume.node("big.bin").size == 1500)
    }

    @Test func badNames() throws {
        let volume = try Self.open(Self.fat16, readOnly: false)
        let root = FATVolume.rootID
        for bad in ["a:b", "a*b", "what?", "x\u{1}y", "a\\b", "a/b", "<>", "pipe|", "quote\"", "", ".", "..", "..."] {
            #expect(errnoOf { _ = try volume.create(parent: root, name: bad) } == EINVAL, "\(bad)")
            #expect(errnoOf { _ = try volume.mkdir(parent: root, name: bad) } == EINVAL, "\(bad)")
        }
        #expect(errnoOf { _ = try volume.lookup(parent: root, name: "a:b") } == ENOENT)
        let long = String(repeating: "n", count: 255), tooLong = String(repeating: "n", count: 256)
        #expect(errnoOf { _ = try volume.create(parent: root, name: tooLong) } == ENAMETOOLONG)
        #expect(errnoOf { _ = try volume.lookup(parent: root, name: tooLong) } == ENAMETOOLONG)
        #expect(errnoOf { try volume.rename(parent: root, name: "big.bin", newParent: root, newName: tooLong) } == ENAMETOOLONG)
        // 255 UTF-16 units is the limit, not 255 bytes; a character outside the BMP takes two.
        #expect(try volume.create(parent: root, name: long).size == 0)
        #expect(errnoOf { _ = try volume.create(parent: root, name: String(repeating: "é", count: 255)) } == nil)
        #expect(errnoOf { _ = try volume.create(parent: root, name: String(repeating: "😀", count: 128)) } == ENAMETOOLONG)
        #expect(try volume.list(root).map(\.name).contains(long))
        // Trailing dots go, as on Linux vfat.
        _ = try volume.create(parent: root, name: "dotted...")
        #expect(try volume.lookup(parent: root, name: "dotted").size == 0)
        #expect(errnoOf { _ = try volume.create(parent: root, name: "DOTTED") } == EEXIST)
    }

    /// Random damage to the metadata of a real image: opening and walking it ends in a value or a
    /// FATError, never a trap (the fuzz target goes further).
    @Test func randomDamageNeverTraps() throws {
        var rng = SplitMix64(seed: 0xBAD)
        for round in 0..<30 {
            var bytes = round % 2 == 0 ? Self.fat16 : Self.fat32
            for _ in 0..<Int.random(in: 1...40, using: &rng) {
                let at = Int.random(in: 0..<min(bytes.count, 200_000), using: &rng)
                bytes[at] = UInt8.random(in: 0...255, using: &rng)
            }
            guard let volume = try? Self.open(bytes, readOnly: false) else { continue }
            _ = try? volumeTree(volume)
            _ = try? volume.create(parent: FATVolume.rootID, name: "new file.txt")
            _ = try? volume.rename(parent: FATVolume.rootID, name: "a", newParent: FATVolume.rootID, newName: "renamed")
            _ = try? volume.unlink(parent: FATVolume.rootID, name: "big.bin")
            _ = try? volume.flush()
        }
    }
}
