import Glibc
import TestSupport
import Testing
@testable import SandboxFS

@Suite struct NodeTableTests {
    static let fileType = UInt32(S_IFREG)
    static let dirType = UInt32(S_IFDIR)

    static func handle(_ ino: UInt64, size: Int = 8, type: Int32 = 1) -> FileHandleBytes {
        FileHandleBytes(type: type, bytes: (0..<size).map { UInt8(truncatingIfNeeded: ino >> (8 * UInt64($0 % 8))) ^ UInt8($0) })
    }

    static func key(_ ino: UInt64, serial: UInt64 = 1, dev: UInt64 = 42) -> InodeKey {
        InodeKey(serial: serial, dev: dev, ino: ino)
    }

    static func passNode(_ table: NodeTable, _ id: UInt64) -> PassNode? {
        if case .pass(let node)? = table[id] { node } else { nil }
    }

    /// FAT nodes are encoded in their ID (partition serial + FATFS node), apart from slab and virtual IDs.
    @Test func fatNodeIDsRoundTripAndStayApart() throws {
        var table = NodeTable()
        for (serial, node) in [(UInt64(1), UInt64(1)), (5, 123_456), ((1 << 23) - 1, (1 << 40) - 1)] {
            let id = try #require(NodeTable.fatID(serial: serial, node: node))
            guard case .fat(let s, let n)? = table[id] else { Issue.record("\(id) is not a FAT node"); continue }
            #expect(s == serial && n == node)
        }
        #expect(NodeTable.fatID(serial: 1 << 23, node: 1) == nil)
        #expect(NodeTable.fatID(serial: 1, node: 1 << 40) == nil)
        let pass = table.lookUp(key: Self.key(7), handle: Self.handle(7), type: Self.fileType)!
        #expect(pass < 1 << 63)
        #expect(Self.passNode(table, pass) != nil)
    }

    @Test func slotStaysCompact() {
        #expect(MemoryLayout<PassSlot>.stride == 80)
    }

    @Test func lookupsCountUpAndForgetErasesAtZero() throws {
        var table = NodeTable()
        let id = table.lookUp(key: Self.key(7), handle: Self.handle(7), type: Self.fileType)!
        let again = table.lookUp(key: Self.key(7), handle: Self.handle(7), type: Self.fileType)!
        #expect(again == id)
        #expect(table.passNodeCount == 1)
        let node = try #require(Self.passNode(table, id))
        #expect(node.serial == 1 && node.key == Self.key(7) && node.type == Self.fileType && node.handle == Self.handle(7))
        let erasedEarly = table.forget(id, 1)
        #expect(!erasedEarly)
        #expect(Self.passNode(table, id) != nil)
        let erased = table.forget(id, 1)
        #expect(erased)
        #expect(table[id] == nil)
        #expect(table.passNodeCount == 0)
        let erasedTwice = table.forget(id, 1)
        #expect(!erasedTwice, "a forgotten ID is unknown")
    }

    @Test func forgetBeyondTheCountErases() {
        var table = NodeTable()
        let id = table.lookUp(key: Self.key(3), handle: Self.handle(3), type: Self.fileType)!
        _ = table.lookUp(key: Self.key(3), handle: Self.handle(3), type: Self.fileType)!
        let erased = table.forget(id, 5)
        #expect(erased)
        #expect(table[id] == nil)
        #expect(table.anomalies == NodeTable.Anomalies(overForgets: 1), "an over-forget is counted, not silent")
    }

    /// Defect: running out of IDs or slots trapped (precondition) inside the FUSE callback, killing the
    /// daemon; now the table answers (node 0, nil) and counts it.
    @Test func exhaustionIsCountedAndAnsweredNotTrapped() {
        var table = NodeTable(virtualIDLimit: 4, slabChunkLimit: 1)
        #expect(table.imageNode("a") == 2)
        #expect(table.imageNode("b") == 3)
        #expect(table.imageNode("c") == 0)
        #expect(table.sandboxesNode("c") == 0)
        for ino in 0..<UInt64(NodeSlab.chunkSize) {
            #expect(table.lookUp(key: Self.key(ino), handle: Self.handle(ino), type: Self.fileType) != nil)
        }
        #expect(table.lookUp(key: Self.key(1 << 20), handle: Self.handle(1 << 20), type: Self.fileType) == nil)
        #expect(table.anomalies == NodeTable.Anomalies(virtualIDsExhausted: 2, slabExhausted: 1))
        #expect(table.passNodeCount == NodeSlab.chunkSize)
    }

    @Test func virtualIDsStayBelowPassthroughIDs() {
        var table = NodeTable()
        let image = table.imageNode("a")
        let sandboxes = table.sandboxesNode("a")
        let pass = table.lookUp(key: Self.key(1), handle: Self.handle(1), type: Self.dirType)!
        let imageAgain = table.imageNode("a")
        let sandboxesAgain = table.sandboxesNode("a")
        #expect(image == imageAgain && sandboxes == sandboxesAgain)
        #expect(image < 1 << 32 && sandboxes < 1 << 32 && pass >= 1 << 32)
        guard case .root? = table[1], case .image("a")? = table[image], case .sandboxes("a")? = table[sandboxes] else {
            Issue.record("virtual nodes: \(String(describing: table[1])), \(String(describing: table[image]))")
            return
        }
        let imageForgotten = table.forget(image, 1)
        let rootForgotten = table.forget(1, 1)
        #expect(!imageForgotten && !rootForgotten, "virtual nodes are never forgotten")
        #expect(table[image] != nil)
        #expect(table[pass + (1 << 32)] == nil, "the slot's next generation is not handed out yet")
        #expect(table[pass & 0xffff_ffff] == nil, "the slot without a generation names no node")
    }

    @Test func idsAreNeverReusedWhenSlotsAre() {
        var table = NodeTable()
        var seen: Set<UInt64> = []
        for round in 0..<50 {
            let ino = UInt64(round % 3)
            let id = table.lookUp(key: Self.key(ino), handle: Self.handle(ino), type: Self.fileType)!
            #expect(seen.insert(id).inserted, "ID \(id) handed out twice (round \(round))")
            let erased = table.forget(id, 1)
            #expect(erased)
            #expect(table[id] == nil)
        }
        #expect(Set(seen.map { $0 & 0xffff_ffff }).count == 1, "the one free slot was reused each time")
    }

    @Test func sameInodeWithAnotherHandleGetsAFreshNode() throws {
        var table = NodeTable()
        let old = table.lookUp(key: Self.key(9), handle: Self.handle(9), type: Self.fileType)!
        let new = table.lookUp(key: Self.key(9), handle: Self.handle(90), type: Self.fileType)!
        #expect(new != old)
        #expect(try #require(Self.passNode(table, old)).handle == Self.handle(9), "the old node lives until forgotten")
        let again = table.lookUp(key: Self.key(9), handle: Self.handle(90), type: Self.fileType)!
        #expect(again == new, "index repointed")
        let oldErased = table.forget(old, 1)
        #expect(oldErased)
        let stillNew = table.lookUp(key: Self.key(9), handle: Self.handle(90), type: Self.fileType)!
        #expect(stillNew == new, "forgetting the old node leaves the new one indexed")
        let newErased = table.forget(new, 3)
        #expect(newErased)
        #expect(table.passNodeCount == 0)
    }

    @Test func anotherTypeGetsAFreshNode() {
        var table = NodeTable()
        let file = table.lookUp(key: Self.key(4), handle: Self.handle(4), type: Self.fileType)!
        let dir = table.lookUp(key: Self.key(4), handle: Self.handle(4), type: Self.dirType)!
        #expect(file != dir)
        #expect(Self.passNode(table, dir)?.isDirectory == true)
        #expect(Self.passNode(table, file)?.isDirectory == false)
    }

    @Test func anotherSandboxSerialGetsAFreshNode() throws {
        var table = NodeTable()
        let first = table.lookUp(key: Self.key(5, serial: 1), handle: Self.handle(5), type: Self.fileType)!
        let second = table.lookUp(key: Self.key(5, serial: 2), handle: Self.handle(5), type: Self.fileType)!
        #expect(first != second)
        #expect(try #require(Self.passNode(table, first)).serial == 1)
        #expect(try #require(Self.passNode(table, second)).serial == 2)
        let again = table.lookUp(key: Self.key(5, serial: 2), handle: Self.handle(5), type: Self.fileType)!
        #expect(again == second)
    }

    @Test func longHandlesRoundTrip() throws {
        var table = NodeTable()
        for size in [0, 8, FileHandleBytes.inlineCapacity, FileHandleBytes.inlineCapacity + 1, 128] {
            let handle = Self.handle(UInt64(size) &* 0x0101_0101, size: size, type: 0x61)
            #expect(handle.isInline == (size <= FileHandleBytes.inlineCapacity))
            let id = table.lookUp(key: Self.key(UInt64(1000 + size)), handle: handle, type: Self.fileType)!
            let stored = try #require(Self.passNode(table, id)).handle
            #expect(stored == handle)
            let (header, type, bytes) = stored.withFileHandle { p in
                (p.load(as: UInt32.self), p.load(fromByteOffset: 4, as: Int32.self),
                 Array(UnsafeRawBufferPointer(start: p + 8, count: size)))
            }
            #expect(header == UInt32(size) && type == 0x61)
            #expect(bytes == handle.withBytes { Array($0) })
        }
        #expect(Self.handle(1, size: 60) != Self.handle(2, size: 60))
        #expect(Self.handle(1, type: 1) != Self.handle(1, type: 2))
    }

    /// After most of a big tree is forgotten the table gives memory back, and what is left stays reachable
    /// under the same IDs; slots handed out afterwards never repeat an ID.
    @Test func shrinkKeepsLiveNodesReachable() throws {
        var table = NodeTable()
        var ids: [UInt64: UInt64] = [:]
        for ino in UInt64(0)..<20_000 {
            ids[ino] = table.lookUp(key: Self.key(ino), handle: Self.handle(ino), type: Self.fileType)!
        }
        let kept = Set(stride(from: UInt64(0), to: 20_000, by: 1_000))
        for (ino, id) in ids where !kept.contains(ino) { let erased = table.forget(id, 1); #expect(erased) }
        let shrank = table.shrinkIfSparse()
        #expect(shrank)
        let shrankAgain = table.shrinkIfSparse()
        #expect(!shrankAgain, "nothing more to give back")
        #expect(table.passNodeCount == kept.count)
        for ino in kept {
            let id = try #require(ids[ino])
            #expect(try #require(Self.passNode(table, id)).key == Self.key(ino))
            let again = table.lookUp(key: Self.key(ino), handle: Self.handle(ino), type: Self.fileType)!
            #expect(again == id)
        }
        let everHanded = Set(ids.values)
        for ino in UInt64(50_000)..<70_000 {
            let id = table.lookUp(key: Self.key(ino), handle: Self.handle(ino), type: Self.fileType)!
            #expect(!everHanded.contains(id), "ID \(id) reused after the shrink")
        }
        for (ino, id) in ids where !kept.contains(ino) { #expect(table[id] == nil) }
        #expect(table.passNodeCount == kept.count + 20_000)
    }

    /// The index against a Dictionary model under random lookups and forgets, with growth, shrinks and the
    /// back-shifts of removal exercised.
    @Test func indexMatchesADictionaryModel() {
        var table = NodeTable()
        var model: [UInt64: UInt64] = [:]
        var rng = SplitMix64(seed: 0x5eed)
        for step in 0..<40_000 {
            let ino = rng.next() % 3_000
            let dev = rng.next() % 2
            let key = Self.key(ino, dev: dev)
            let slotKey = ino << 1 | dev
            if let id = model[slotKey], rng.next() % 2 == 0 {
                let erased = table.forget(id, 1)
                #expect(erased, "step \(step)")
                model[slotKey] = nil
            } else if model[slotKey] == nil {
                model[slotKey] = table.lookUp(key: key, handle: Self.handle(ino), type: Self.fileType)!
            }
            if step % 997 == 0 { _ = table.shrinkIfSparse() }
        }
        #expect(table.passNodeCount == model.count)
        for (slotKey, id) in model {
            let key = Self.key(slotKey >> 1, dev: slotKey & 1)
            let again = table.lookUp(key: key, handle: Self.handle(key.ino), type: Self.fileType)!
            #expect(again == id)
        }
    }
}


