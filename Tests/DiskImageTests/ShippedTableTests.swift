import Glibc
import Testing
@testable import DiskImage

/// Partition tables as image builders ship them: OpenWrt's ptgen GPT without a backup, HAOS's hybrid MBR.
@Suite("Partition tables as shipped")
struct ShippedTableTests {
    @Test func soundGPTHasNoNotice() throws {
        #expect(try PartitionTable.read(GPTTests.image().source).notices.isEmpty)
    }

    @Test func gptWithoutBackupIsAcceptedWithANotice() throws {
        var img = GPTTests.image()
        // ptgen writes no backup header at all: the last sector is zeros.
        img.put([UInt8](repeating: 0, count: 512), at: 239 * 512)
        let table = try PartitionTable.read(img.source)
        #expect(table.partitions == GPTTests.expected)
        #expect(table.notices.count == 1)
        #expect(table.notices.first?.contains("GPT backup header unusable") == true)
    }

    /// HAOS on the Pi 3/4: 0xEE plus a FAT entry for the firmware, over a valid GPT.
    static func hybrid() -> ImageBuilder {
        var img = GPTTests.image()
        img.mbrEntry(index: 1, type: 0x0C, start: 40, count: 40)
        return img
    }

    @Test func hybridMBRUsesTheGPT() throws {
        let table = try PartitionTable.read(Self.hybrid().source)
        #expect(table.scheme == .gpt)
        #expect(table.partitions == GPTTests.expected)
        #expect(table.notices == ["hybrid MBR: its GPT is used"])
    }

    @Test func hybridMBRWithBrokenGPTFallsBackToItsEntries() throws {
        var img = Self.hybrid()
        img.corrupt(byte: 512 + 16)
        img.corrupt(byte: 239 * 512 + 16)
        let table = try PartitionTable.read(img.source)
        #expect(table.scheme == .mbr)
        #expect(table.partitions.map(\.number) == [2])
        #expect(table.partitions.first?.mbrType == 0x0C)
        #expect(table.notices.first?.hasPrefix("hybrid MBR without a usable GPT") == true)
    }

    @Test func protectiveOnlyMBRWithBrokenGPTStaysAnError() {
        var img = GPTTests.image()
        img.corrupt(byte: 512 + 16)
        img.corrupt(byte: 239 * 512 + 16)
        #expect(throws: DiskImageError.self) { try PartitionTable.read(img.source) }
    }

    /// Yocto wic with more than four partitions: logicals numbered 5+ as Linux does, one can be root.
    @Test func fifthPartitionIsALogicalAndCanBeRoot() throws {
        var img = ImageBuilder(sectors: 600)
        img.mbrEntry(index: 0, type: 0x0C, start: 8, count: 32)
        img.mbrEntry(index: 1, type: 0x83, start: 40, count: 40)
        img.mbrEntry(index: 2, type: 0x83, start: 80, count: 40)
        img.mbrEntry(index: 3, type: 0x0F, start: 120, count: 480)
        img.mbrEntry(sector: 120, index: 0, type: 0x83, start: 2, count: 100)
        img.mbrEntry(sector: 120, index: 1, type: 0x05, start: 110, count: 300)
        img.mbrEntry(sector: 230, index: 0, type: 0x83, start: 2, count: 298)
        img.ext(at: 232 * 512, .init(logBlockSize: 0, blocks: 149))
        let table = try PartitionTable.read(img.source)
        #expect(table.partitions.map(\.number) == [1, 2, 3, 4, 5, 6])
        #expect(table.partitions.last?.startByte == 232 * 512)
        let decision = try RootChoice.choose(.init(table: table) { p in
            FilesystemProbe.probe(img.source, offset: p.startByte, length: p.sizeBytes)
        })
        #expect(decision.root.partition.number == 6)
    }

    /// The oracles: sgdisk's own hybrid MBR (`-h`), and sfdisk's GPT with its backup wiped as ptgen leaves it.
    @Test(.enabled(if: programExists("sgdisk") && programExists("sfdisk"), "needs sgdisk (gdisk) and sfdisk"))
    func hybridAndBackuplessFromRealTools() throws {
        let dir = ScratchDirectory()
        let hybrid = dir.path + "/hybrid.img", ptgen = dir.path + "/ptgen.img"
        #expect(run(["truncate", "-s", "64M", hybrid]) == 0)
        #expect(run(["sgdisk", "-o", "-n", "1:2048:+16M", "-t", "1:0700", "-n", "2:0:0", "-t", "2:8300", hybrid]) == 0)
        #expect(run(["sgdisk", "-h", "1", hybrid]) == 0)
        let h = try PartitionTable.read(FileByteSource(path: hybrid))
        #expect(h.scheme == .gpt)
        #expect(h.partitions.map(\.number) == [1, 2])
        #expect(h.partitions.map(\.startByte) == [2048 * 512, 34816 * 512])
        #expect(h.notices == ["hybrid MBR: its GPT is used"])

        #expect(run(["truncate", "-s", "64M", ptgen]) == 0)
        #expect(run(["sh", "-c", "printf 'label: gpt\\nstart=2048,size=32768,type=L\\n' | sfdisk -q \(ptgen)"]) == 0)
        #expect(run(["dd", "if=/dev/zero", "of=\(ptgen)", "bs=512", "seek=\((64 << 20) / 512 - 33)", "count=33", "conv=notrunc"]) == 0)
        let p = try PartitionTable.read(FileByteSource(path: ptgen))
        #expect(p.partitions.map(\.startByte) == [2048 * 512])
        #expect(p.notices.count == 1)
        #expect(p.notices.first?.hasPrefix("GPT backup header unusable (no \"EFI PART\" signature at sector 131071)") == true)
    }
}
