import Glibc
import Testing
@testable import DiskImage

@Suite("GPT partition tables")
struct GPTTests {
    static let entries = [
        ImageBuilder.GPTEntry(type: ImageBuilder.efiGUID, first: 40, last: 79, name: "EFI"),
        ImageBuilder.GPTEntry(type: ImageBuilder.linuxGUID, first: 80, last: 199, name: "rööt 🐧"),
    ]

    static func image(entryCount: UInt32 = 128) -> ImageBuilder {
        var img = ImageBuilder(sectors: 240)
        img.gpt(entries, entryCount: entryCount)
        return img
    }

    static let expected = [
        Partition(number: 1, startByte: 40 * 512, sizeBytes: 40 * 512, typeName: "EFI System (GPT)",
                  gptTypeGUID: ImageBuilder.efiGUID, gptName: "EFI", partUUID: "11111111-2222-3333-4444-555555555550"),
        Partition(number: 2, startByte: 80 * 512, sizeBytes: 120 * 512, typeName: "Linux filesystem (GPT)",
                  gptTypeGUID: ImageBuilder.linuxGUID, gptName: "rööt 🐧", partUUID: "11111111-2222-3333-4444-555555555551"),
    ]

    @Test func protectiveMBRLeadsToGPT() throws {
        let table = try PartitionTable.read(Self.image().source)
        #expect(table.scheme == .gpt)
        #expect(table.partitions == Self.expected)
    }

    @Test func entryNumberIsIndexPlusOne() throws {
        var img = ImageBuilder(sectors: 240)
        img.gpt([ImageBuilder.GPTEntry(type: "00000000-0000-0000-0000-000000000000", first: 0, last: 0, name: ""),
                 ImageBuilder.GPTEntry(type: ImageBuilder.linuxGUID, first: 80, last: 99, name: "")])
        let table = try PartitionTable.read(img.source)
        #expect(table.partitions.map(\.number) == [2])
        #expect(table.partitions.first?.gptName == nil)
    }

    @Test func badPrimaryHeaderCRCUsesBackup() throws {
        var img = Self.image()
        img.corrupt(byte: 512 + 16)
        let table = try PartitionTable.read(img.source)
        #expect(table.partitions == Self.expected)
    }

    @Test func badPrimaryArrayCRCUsesBackup() throws {
        var img = Self.image()
        img.corrupt(byte: 2 * 512 + 32)  // first LBA of entry 1 in the primary array
        let table = try PartitionTable.read(img.source)
        #expect(table.partitions == Self.expected)
    }

    @Test func bothHeadersBad() {
        var img = Self.image()
        img.corrupt(byte: 512 + 16)
        img.corrupt(byte: 239 * 512 + 16)
        #expect {
            try PartitionTable.read(img.source)
        } throws: { error in
            guard let e = error as? DiskImageError, case .gptHeadersInvalid(let p, let b) = e else { return false }
            return p.contains("CRC32") && b.contains("CRC32") && e.errno == EINVAL
        }
    }

    @Test func bothArraysBad() {
        var img = Self.image()
        img.corrupt(byte: 2 * 512 + 32)
        img.corrupt(byte: (239 - 32) * 512 + 32)
        #expect {
            try PartitionTable.read(img.source)
        } throws: { error in
            guard case .gptEntryArrayCRCMismatch? = error as? DiskImageError else { return false }
            return true
        }
    }

    @Test(arguments: [UInt32(1025), 0x0100_0000, 0xFFFF_FFFF])
    func hugeEntryCount(count: UInt32) {
        var img = Self.image()
        for lba: UInt64 in [1, 239] {
            img.put(UInt64(count), at: Int(lba) * 512 + 80, width: 4)
            img.resealHeader(lba: lba)
        }
        #expect(throws: DiskImageError.gptTooManyEntries(count: count, entrySize: 128, limitBytes: GPT.maxEntryArrayBytes)) {
            try PartitionTable.read(img.source)
        }
    }

    @Test(arguments: [UInt32(0), 64, 130, 0xFFFF_FFF8])
    func badEntrySize(size: UInt32) {
        var img = Self.image()
        for lba: UInt64 in [1, 239] {
            img.put(UInt64(size), at: Int(lba) * 512 + 84, width: 4)
            img.resealHeader(lba: lba)
        }
        #expect {
            try PartitionTable.read(img.source)
        } throws: { error in
            switch error as? DiskImageError {
            case .gptBadEntrySize(size)?, .gptTooManyEntries?: return true
            default: return false
            }
        }
    }

    @Test func entryArrayBeyondEnd() {
        var img = Self.image()
        for lba: UInt64 in [1, 239] {
            img.put(230, at: Int(lba) * 512 + 72, width: 8)
            img.resealHeader(lba: lba)
        }
        #expect(throws: DiskImageError.gptEntryArrayBeyondEnd(lba: 230, bytes: 128 * 128, diskSectors: 240)) {
            try PartitionTable.read(img.source)
        }
    }

    @Test func gptPartitionBeyondEnd() {
        var img = ImageBuilder(sectors: 240)
        img.gpt([ImageBuilder.GPTEntry(type: ImageBuilder.linuxGUID, first: 80, last: 240, name: "")])
        #expect(throws: DiskImageError.partitionBeyondEnd(number: 1, startSector: 80, sectorCount: 161, diskSectors: 240)) {
            try PartitionTable.read(img.source)
        }
    }

    @Test func gptHostileLastLBADoesNotOverflow() {
        var img = ImageBuilder(sectors: 240)
        img.gpt([ImageBuilder.GPTEntry(type: ImageBuilder.linuxGUID, first: 0, last: .max, name: "")])
        #expect(throws: DiskImageError.partitionBeyondEnd(number: 1, startSector: 0, sectorCount: .max, diskSectors: 240)) {
            try PartitionTable.read(img.source)
        }
    }

    @Test func gptReversedEntry() {
        var img = ImageBuilder(sectors: 240)
        img.gpt([ImageBuilder.GPTEntry(type: ImageBuilder.linuxGUID, first: 100, last: 99, name: "")])
        #expect(throws: DiskImageError.gptEntryReversed(number: 1, firstLBA: 100, lastLBA: 99)) {
            try PartitionTable.read(img.source)
        }
    }

    @Test func gptOverlap() {
        var img = ImageBuilder(sectors: 240)
        img.gpt([ImageBuilder.GPTEntry(type: ImageBuilder.linuxGUID, first: 40, last: 100, name: ""),
                 ImageBuilder.GPTEntry(type: ImageBuilder.linuxGUID, first: 100, last: 150, name: "")])
        #expect(throws: DiskImageError.overlappingPartitions(first: 1, second: 2)) { try PartitionTable.read(img.source) }
    }

    @Test func guidTextIsMixedEndian() {
        #expect(GPT.mixedEndianGUID(ImageBuilder.guidBytes(ImageBuilder.linuxGUID)) == ImageBuilder.linuxGUID)
        // The on-disk bytes of the Linux filesystem GUID, as the UEFI spec lists them.
        #expect(ImageBuilder.guidBytes(ImageBuilder.linuxGUID).prefix(4) == [0xAF, 0x3D, 0xC6, 0x0F])
    }
}
