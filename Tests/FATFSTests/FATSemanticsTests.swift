import Glibc
import Testing
@testable import FATFS

/// What the FUSE layer relies on: the dirty flag's life, node IDs across renames, readdir offsets
/// across changes, times at FAT's resolution.
@Suite(.enabled(if: Shell.haveTools, Comment(rawValue: Shell.toolsMissing)))
struct FATSemanticsTests {
    static func memoryVolume(bits: Int, clock: @escaping @Sendable () -> FATTime = { FATTime.now() }) throws -> (MemoryBlockDevice, FATVolume) {
        let scratch = Scratch()
        let image = scratch.path + "/fat.img"
        #expect(FATConfig(bits: bits, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: bits == 32 ? 40960 : bits == 16 ? 8192 : 2048).make(image))
        let device = MemoryBlockDevice(bytes: readFile(image))
        return (device, try FATVolume(device: device, readOnly: false, clock: clock))
    }

    @Test(arguments: [12, 16, 32])
    func dirtyFlagFromFirstChangeToFlush(bits: Int) throws {
        let (device, volume) = try Self.memoryVolume(bits: bits)
        let stateByte = bits == 32 ? 65 : 37
        let pristine = device.bytes
        _ = try volume.list(FATVolume.rootID)
        try volume.flush()
        #expect(device.bytes == pristine, "reading and flushing write nothing")
        _ = try volume.create(parent: FATVolume.rootID, name: "new")
        #expect(device.bytes[stateByte] & 1 == 1, "dirty while changed")
        try volume.flush()
        #expect(device.bytes[stateByte] & 1 == 0, "clean after flush")
        // A volume that was dirty when opened stays dirty (as Linux leaves it for fsck).
        var dirty = device.bytes
        dirty[stateByte] |= 1
        let again = try FATVolume(device: MemoryBlockDevice(bytes: dirty), readOnly: false)
        #expect(again.info.wasDirty)
    }

    @Test func nodesSurviveRenamesOfThemAndTheirAncestors() throws {
        let (_, volume) = try Self.memoryVolume(bits: 16)
        let top = try volume.mkdir(parent: FATVolume.rootID, name: "top")
        let mid = try volume.mkdir(parent: top.id, name: "mid")
        let leaf = try volume.create(parent: mid.id, name: "leaf.txt")
        _ = try volume.write(leaf.id, at: 0, [1, 2, 3])
        try volume.rename(parent: FATVolume.rootID, name: "top", newParent: FATVolume.rootID, newName: "Top Renamed")
        try volume.rename(parent: top.id, name: "mid", newParent: FATVolume.rootID, newName: "mid moved up")
        try volume.rename(parent: mid.id, name: "leaf.txt", newParent: top.id, newName: "leaf in top.txt")
        #expect(try volume.read(leaf.id, at: 0, count: 3) == [1, 2, 3])
        #expect(try volume.lookup(parent: top.id, name: "LEAF IN TOP.TXT").id == leaf.id)
        #expect(try volume.node("Top Renamed/leaf in top.txt").id == leaf.id)
        #expect(try volume.lookup(parent: FATVolume.rootID, name: "mid moved up").id == mid.id)
        // Forgotten, an ID is stale; a new lookup gives a new one.
        for _ in 0..<10 { volume.forget(leaf.id) }
        #expect(errnoOf { _ = try volume.getattr(leaf.id) } == ESTALE)
        #expect(try volume.node("Top Renamed/leaf in top.txt").id != leaf.id)
    }

    @Test func readdirOffsetsSurviveChanges() throws {
        let (_, volume) = try Self.memoryVolume(bits: 32)
        for i in 0..<30 { _ = try volume.create(parent: FATVolume.rootID, name: "file with a long name \(i)") }
        let first = try volume.readDirectory(FATVolume.rootID, from: 0, limit: 12)
        #expect(first.prefix(2).map(\.name) == [".", ".."])
        // Remove some already listed and some not yet, add new ones; continue where we were.
        for i in [0, 3, 20, 21] { try volume.unlink(parent: FATVolume.rootID, name: "file with a long name \(i)") }
        for i in 30..<33 { _ = try volume.create(parent: FATVolume.rootID, name: "file with a long name \(i)") }
        var rest: [FATDirectoryEntry] = []
        var offset = first.last!.nextOffset
        while case let part = try volume.readDirectory(FATVolume.rootID, from: offset, limit: 5), let last = part.last {
            rest += part
            offset = last.nextOffset
        }
        let seen = first.dropFirst(2).map(\.name) + rest.map(\.name)
        #expect(Set(seen).count == seen.count, "no entry twice")
        // Every entry there all along is listed once; removed ones not yet listed are not; new ones may be.
        let stayed = Set((0..<30).filter { ![0, 3, 20, 21].contains($0) }.map { "file with a long name \($0)" })
        #expect(stayed.isSubset(of: Set(seen)), "missing: \(stayed.subtracting(seen))")
        #expect(!seen.contains("file with a long name 20") && !seen.contains("file with a long name 21"))
    }

    /// readdirplus: each entry's attributes are lookup's, each holds one lookup of the same node, and
    /// forgetting them leaves the node table as it was.
    @Test func readDirectoryPlusGivesLookupsAttributes() throws {
        let (_, volume) = try Self.memoryVolume(bits: 32)
        let dir = try volume.mkdir(parent: FATVolume.rootID, name: "sub")
        let file = try volume.create(parent: FATVolume.rootID, name: "a long file name.txt")
        _ = try volume.write(file.id, at: 0, [UInt8](repeating: 1, count: 3000))
        volume.forget(dir.id)
        volume.forget(file.id)
        let before = volume.core.withLock { $0.nodes.count }
        let plus = try volume.readDirectoryPlus(FATVolume.rootID, from: 0)
        #expect(plus.map(\.entry) == (try volume.readDirectory(FATVolume.rootID, from: 0)))
        #expect(plus.filter { $0.attr == nil }.map(\.entry.name) == [".", ".."])
        for (entry, attr) in plus {
            guard let attr else { continue }
            let looked = try volume.lookup(parent: FATVolume.rootID, name: entry.name)
            #expect(looked == attr, "\(entry.name)")
            volume.forget(attr.id, count: 2)
        }
        #expect(plus.first { $0.entry.name == "a long file name.txt" }?.attr?.size == 3000)
        #expect(volume.core.withLock { $0.nodes.count } == before, "every lookup forgotten: the nodes are gone")
    }

    @Test func timesAtFATResolution() throws {
        let now = FATTime(seconds: 1_614_861_297, nanoseconds: 456_789_000)   // an odd second
        let (_, volume) = try Self.memoryVolume(bits: 12, clock: { now })
        let attr = try volume.create(parent: FATVolume.rootID, name: "stamp")
        #expect(attr.mtime == FATTime(seconds: 1_614_861_296), "2 s")
        #expect(attr.crtime == FATTime(seconds: 1_614_861_297, nanoseconds: 450_000_000), "10 ms")
        #expect(attr.atime == FATTime(seconds: 1_614_816_000), "the day (UTC)")
        #expect(attr.ctime == attr.mtime)
        let set = try volume.setAttributes(attr.id, atime: FATTime(seconds: 1_000_000_000), mtime: FATTime(seconds: 1_000_000_001))
        #expect(set.mtime == FATTime(seconds: 1_000_000_000) && set.atime == FATTime(seconds: 999_993_600))
        // The read-only attribute is the owner write bit.
        #expect(try volume.setAttributes(attr.id, mode: 0o444).mode & 0o777 == 0o555)
        #expect(try volume.setAttributes(attr.id, mode: 0o644).mode & 0o777 == 0o755)
        let statfs = volume.statfs()
        #expect(statfs.nameMax == 255 && statfs.blockSize == 512 && statfs.freeBlocks <= statfs.blocks)
    }
}

extension FATSemanticsTests {
    /// A caller that forgot a directory while a child is held, then renames that child out of it: the
    /// directory leaves the table at the end of the rename, and nothing traps.
    @Test func renameOutOfAForgottenDirectory() throws {
        let (_, volume) = try Self.memoryVolume(bits: 16)
        let dir = try volume.mkdir(parent: FATVolume.rootID, name: "dir")
        let file = try volume.create(parent: dir.id, name: "f")
        volume.forget(dir.id)   // lookups 0, kept for its child
        try volume.rename(parent: dir.id, name: "f", newParent: FATVolume.rootID, newName: "f moved")
        #expect(errnoOf { _ = try volume.getattr(dir.id) } == ESTALE)
        #expect(try volume.lookup(parent: FATVolume.rootID, name: "f moved").id == file.id)
    }
}
