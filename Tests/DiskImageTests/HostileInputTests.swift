import Testing
import TestSupport
@testable import DiskImage

/// Valid images with bytes of their tables overwritten at random (seeded): reading must either
/// throw a DiskImageError or return a table that is actually sound. A trap fails the whole run.
@Suite("Mutated tables")
struct HostileInputTests {
    /// True when the table was accepted (and checked), false when it was refused.
    @discardableResult
    static func checkSound(_ source: ByteArraySource) -> Bool {
        let table: PartitionTable
        do {
            table = try PartitionTable.read(source)
        } catch {
            return false  // refusing is fine (typed: always a DiskImageError)
        }
        for p in table.partitions {
            #expect(p.startByte + p.sizeBytes <= source.size, "partition \(p.number) outside the image")
            #expect(p.startByte % 512 == 0)
        }
        let plain = table.partitions.filter { !$0.isExtendedContainer }
        for (i, a) in plain.enumerated() {
            for b in plain[(i + 1)...] {
                #expect(a.startByte + a.sizeBytes <= b.startByte || b.startByte + b.sizeBytes <= a.startByte,
                        "partitions \(a.number) and \(b.number) overlap")
            }
        }
        if let root = try? ImageLayout.findRoot(in: source) {
            #expect(table.partitions.contains(root.partition))
            #expect(root.filesystem.isLinuxRoot)
        }
        return true
    }

    /// Byte ranges worth hitting in each base image.
    static let bases: [(String, ImageBuilder, [Range<Int>])] = [
        ("rpi", MBRTests.rpi(), [446..<512, 8 * 512..<9 * 512, 16 * 512 + 1024..<16 * 512 + 1200]),
        ("logicals", MBRTests.withLogicals(), [446..<512, 100 * 512 + 446..<100 * 512 + 512, 250 * 512 + 446..<250 * 512 + 512]),
    ]

    @Test(arguments: 0..<bases.count)
    func mutatedMBR(base: Int) {
        let (_, image, ranges) = Self.bases[base]
        var rng = SplitMix64(seed: UInt64(base) &* 1_000_003)
        var accepted = 0
        for _ in 0..<1500 {
            var img = image
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let r = ranges.randomElement(using: &rng)!
                img.bytes[Int.random(in: r, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            if Self.checkSound(img.source) { accepted += 1 }
        }
        // Most single-byte hits leave a readable table: a parser that refused everything would pass above.
        #expect(accepted > 150, "only \(accepted) of 1500 mutated tables were accepted")
        #expect(Self.checkSound(image.source), "the unmutated image reads")
    }

    /// GPT mutations with the checksums repaired, so the parser sees hostile but "valid" fields.
    @Test func mutatedGPTWithValidChecksums() {
        var rng = SplitMix64(seed: 42)
        var accepted = 0
        for _ in 0..<1500 {
            var img = GPTTests.image()
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let target = Bool.random(using: &rng)
                    ? 512 + Int.random(in: 24..<92, using: &rng)            // primary header fields
                    : 1024 + Int.random(in: 0..<256, using: &rng)           // first two entries
                img.bytes[target] = UInt8.random(in: 0...255, using: &rng)
            }
            let array = Array(img.bytes[1024..<1024 + 128 * 128])
            img.put(UInt64(CRC32.checksum(array)), at: 512 + 88, width: 4)
            img.resealHeader(lba: 1)
            if Self.checkSound(img.source) { accepted += 1 }
        }
        #expect(accepted > 150, "only \(accepted) of 1500 mutated tables were accepted")
        #expect(Self.checkSound(GPTTests.image().source), "the unmutated image reads")
    }

    @Test func randomSmallImages() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<300 {
            var bytes = (0..<(512 * Int.random(in: 1...8, using: &rng))).map { _ in UInt8.random(in: 0...255, using: &rng) }
            bytes[510] = 0x55
            bytes[511] = 0xAA
            Self.checkSound(ByteArraySource(bytes))
        }
    }
}
