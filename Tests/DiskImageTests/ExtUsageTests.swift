import Glibc
import Testing
@testable import DiskImage

@Suite("ext superblock space counts")
struct ExtUsageTests {
    /// A superblock with the given counts (64bit feature set when any count needs the high word).
    static func superblock(blocks: UInt64, free: UInt64, inodes: UInt32, freeInodes: UInt32,
                           blocksPerGroup: UInt32 = 32768, inodesPerGroup: UInt32 = 8192) -> [UInt8] {
        var sb = [UInt8](repeating: 0, count: 1024)
        func put32(_ value: UInt32, _ at: Int) { for i in 0..<4 { sb[at + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) } }
        put32(inodes, 0)
        put32(UInt32(truncatingIfNeeded: blocks), 4)
        put32(UInt32(truncatingIfNeeded: free), 12)
        put32(freeInodes, 16)
        put32(blocksPerGroup, 32)
        put32(inodesPerGroup, 40)
        sb[56] = 0x53; sb[57] = 0xEF
        if blocks >> 32 != 0 || free >> 32 != 0 {
            put32(Ext.incompat64Bit, 96)
            put32(UInt32(blocks >> 32), 0x150)
            put32(UInt32(free >> 32), 0x158)
        }
        return sb
    }

    @Test func countsAndTheGroupsTheInodesNeed() throws {
        let usage = try #require(ExtUsage(superblock: Self.superblock(blocks: 506_880, free: 284_436, inodes: 126_720, freeInodes: 126_720 - 8193)))
        #expect(usage.usedBlocks == 222_444)
        #expect(usage.blocksForUsedInodes == 2 * 32768)   // 8193 inodes: one more than a group holds
        let big = try #require(ExtUsage(superblock: Self.superblock(blocks: 1 << 33 | 5, free: 1 << 32, inodes: 100, freeInodes: 100)))
        #expect(big.usedBlocks == 1 << 32 | 5)
        #expect(big.blocksForUsedInodes == 0)
    }

    @Test func inconsistentCountsAreRejected() {
        #expect(ExtUsage(superblock: Self.superblock(blocks: 100, free: 101, inodes: 10, freeInodes: 1)) == nil)
        #expect(ExtUsage(superblock: Self.superblock(blocks: 100, free: 1, inodes: 10, freeInodes: 11)) == nil)
        #expect(ExtUsage(superblock: Self.superblock(blocks: 100, free: 1, inodes: 10, freeInodes: 1, blocksPerGroup: 0)) == nil)
        #expect(ExtUsage(superblock: Self.superblock(blocks: 100, free: 1, inodes: 10, freeInodes: 1, inodesPerGroup: 0)) == nil)
        var notExt = Self.superblock(blocks: 100, free: 1, inodes: 10, freeInodes: 1)
        notExt[56] = 0
        #expect(ExtUsage(superblock: notExt) == nil)
        #expect(ExtUsage(superblock: Array(notExt.prefix(512))) == nil)
    }

    /// The oracle: dumpe2fs's figures for a filesystem mke2fs filled.
    @Test(.enabled(if: ["mke2fs", "dumpe2fs"].allSatisfy(programExists), "needs mke2fs and dumpe2fs"))
    func matchesDumpe2fs() throws {
        let dir = ScratchDirectory()
        let content = dir.path + "-content"
        try #require(mkdir(content, 0o755) == 0)
        defer { _ = output(ofShell: "rm -rf '\(content)'") }
        _ = try #require(output(ofShell: "head -c 5M /dev/urandom > '\(content)/blob' && touch '\(content)'/f{1..300}; echo"))
        let image = dir.path + "/root.ext4"
        _ = try #require(output(ofShell: "PATH=$PATH:/usr/sbin:/sbin mke2fs -q -F -t ext4 -d '\(content)' '\(image)' 64M && echo"))
        let dump = try #require(output(ofShell: "PATH=$PATH:/usr/sbin:/sbin dumpe2fs -h '\(image)'"))
        func field(_ name: String) -> UInt64? {
            dump.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .flatMap { UInt64($0.dropFirst(name.count + 1).trimmingPrefix(while: { $0 == " " })) }
        }
        let bytes = try FileByteSource(path: image).read(at: 1024, count: 1024)
        let usage = try #require(ExtUsage(superblock: bytes))
        #expect(usage.blockCount == field("Block count"))
        #expect(usage.freeBlocks == field("Free blocks"))
        #expect(UInt64(usage.inodeCount) == field("Inode count"))
        #expect(UInt64(usage.freeInodes) == field("Free inodes"))
        #expect(UInt64(usage.blocksPerGroup) == field("Blocks per group"))
        #expect(UInt64(usage.inodesPerGroup) == field("Inodes per group"))
        #expect(usage.usedBlocks > 5 * 256)   // the 5 MiB file's 1,280 blocks and metadata
    }
}
