import Testing
@testable import DiskImage

/// Images made by Tools/make-test-image with the real sfdisk/mkfs tools, read back from files.
@Suite("Images from Tools/make-test-image",
       .enabled(if: ["sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "debugfs"].allSatisfy(programExists),
                "needs sfdisk, mkfs.ext4, mkfs.vfat, mcopy and debugfs"))
struct RealImageTests {
    enum Expect: Sendable, CustomStringConvertible {
        case root(Int, FilesystemType, blockSize: Int, label: String? = "rootfs")
        case fails(String, @Sendable (DiskImageError) -> Bool)

        var description: String {
            switch self {
            case .root(let n, let t, let b, _): return "root \(n) \(t) \(b)"
            case .fails(let what, _): return "fails: \(what)"
            }
        }
    }

    static let cases: [(String, Expect)] = [
        ("rpi", .root(2, .ext4, blockSize: 4096)),
        ("ext4-1k", .root(2, .ext4, blockSize: 1024)),
        ("dirty-journal", .root(2, .ext4, blockSize: 4096)),
        ("gpt", .root(2, .ext4, blockSize: 4096)),
        ("two-linux", .root(2, .ext4, blockSize: 4096, label: "part2")),
        ("whole-ext4", .root(0, .ext4, blockSize: 4096)),
        ("gpt-bad-primary", .root(2, .ext4, blockSize: 4096)),
        ("no-linux", .fails("no Linux") { $0 == .noLinuxPartition(scheme: .mbr, partitionCount: 1) }),
        ("unknown-fs", .fails("no Linux") { $0 == .noLinuxPartition(scheme: .mbr, partitionCount: 1) }),
        ("random", .fails("no Linux") { $0 == .noLinuxPartition(scheme: .none, partitionCount: 0) }),
        ("empty", .fails("empty") { $0 == .emptyImage }),
        ("odd-size", .fails("odd size") { $0 == .sizeNotSectorMultiple(size: 1000) }),
        ("mbr-beyond-end", .fails("beyond end") {
            $0 == .partitionBeyondEnd(number: 1, startSector: 2048, sectorCount: 65536, diskSectors: 16384) }),
        ("mbr-overlap", .fails("overlap") { $0 == .overlappingPartitions(first: 1, second: 2) }),
        ("ebr-loop", .fails("loop") { $0 == .extendedChainLoop(sector: 2048) }),
        ("gpt-bad-crc-both", .fails("both headers bad") {
            if case .gptHeadersInvalid = $0 { return true } else { return false } }),
        ("gpt-huge-count", .fails("too many entries") {
            $0 == .gptTooManyEntries(count: 16_777_216, entrySize: 128, limitBytes: GPT.maxEntryArrayBytes) }),
    ]

    @Test(arguments: cases)
    func kind(_ kind: String, _ expect: Expect) throws {
        let dir = ScratchDirectory()
        let path = dir.path + "/\(kind).img"
        try #require(run([makeTestImage, kind, path]) == 0, "\(makeTestImage) \(kind) failed")
        let source = try FileByteSource(path: path)
        switch expect {
        case .root(let number, let type, let blockSize, let label):
            let root = try ImageLayout.findRoot(in: source)
            #expect(root.partition.number == number)
            #expect(root.filesystem.type == type)
            #expect(root.filesystem.blockSize == blockSize)
            #expect(root.filesystem.label == label)
            #expect(root.filesystem.sizeBytes <= root.partition.sizeBytes)
            #expect(root.partition.startByte + root.partition.sizeBytes <= source.size)
        case .fails(_, let matches):
            #expect {
                try ImageLayout.findRoot(in: source)
            } throws: { error in
                (error as? DiskImageError).map(matches) ?? false
            }
        }
    }

    @Test func rpiBootPartitionIsFAT32() throws {
        let dir = ScratchDirectory()
        let path = dir.path + "/rpi.img"
        try #require(run([makeTestImage, "rpi", path]) == 0)
        let source = try FileByteSource(path: path)
        let table = try PartitionTable.read(source)
        let boot = try #require(table.partitions.first)
        #expect(boot.startByte == 4 << 20)
        #expect(boot.sizeBytes == 64 << 20)
        #expect(boot.mbrType == 0x0C)
        let fs = FilesystemProbe.probe(source, offset: boot.startByte, length: boot.sizeBytes)
        #expect(fs?.type == .vfat)
        #expect(fs?.label == "bootfs")
        #expect(throws: DiskImageError.notLinuxFilesystem(partition: 1, found: "vfat")) {
            try ImageLayout.findRoot(in: source, partitionNumber: 1)
        }
    }

    @Test(.enabled(if: programExists("mkfs.xfs"), "needs mkfs.xfs"))
    func xfsRoot() throws {
        let dir = ScratchDirectory()
        let path = dir.path + "/xfs.img"
        let status = run([makeTestImage, "xfs", path])
        try #require(status == 0, "make-test-image xfs exited \(status)")
        let root = try ImageLayout.findRoot(in: FileByteSource(path: path))
        #expect(root.partition.number == 2)
        #expect(root.filesystem.type == .xfs)
        #expect(root.filesystem.label == "rootfs")
        #expect(root.filesystem.ioUnit == 512, "mkfs.xfs on a file uses 512-byte sectors")
    }
}
