public enum PartitionScheme: String, Sendable {
    case mbr, gpt
    /// No partition table: the whole file is one filesystem.
    case none
}

/// Bytes `offset..<offset+length` of the image.
public struct ByteRange: Sendable, Hashable {
    public let offset: UInt64
    public let length: UInt64
    public init(offset: UInt64, length: UInt64) {
        self.offset = offset
        self.length = length
    }
}

public struct Partition: Sendable, Equatable {
    /// As Linux numbers them: MBR primaries 1-4, logicals 5+; GPT entry index + 1; 0 for a whole-disk fs.
    public let number: Int
    /// Where the partition's bytes lie in the image, in order: one range, except for an LVM logical volume
    /// whose linear segments are not one run of its PV (one range per run).
    public let ranges: [ByteRange]
    /// The first range's start: where the partition's first byte is.
    public var startByte: UInt64 { ranges[0].offset }
    /// All ranges together.
    public let sizeBytes: UInt64
    /// Human readable, e.g. "Linux (0x83)", "W95 FAT32 LBA (0x0c)", "Linux filesystem (GPT)".
    public let typeName: String
    public let mbrType: UInt8?
    /// Canonical lowercase text form.
    public let gptTypeGUID: String?
    public let gptName: String?
    /// What fstab's `PARTUUID=` names: GPT the entry's unique GUID (lowercase); MBR the disk signature in hex,
    /// "-" and the two-digit partition number (`6c586e13-02`), as blkid prints it; nil for a whole-disk fs.
    public let partUUID: String?

    public init(number: Int, startByte: UInt64, sizeBytes: UInt64, typeName: String,
                mbrType: UInt8? = nil, gptTypeGUID: String? = nil, gptName: String? = nil, partUUID: String? = nil) {
        self.init(number: number, ranges: [ByteRange(offset: startByte, length: sizeBytes)], typeName: typeName,
                  mbrType: mbrType, gptTypeGUID: gptTypeGUID, gptName: gptName, partUUID: partUUID)
    }

    /// `ranges` must not be empty and their lengths must not overflow together (LVMVolumeGroup checks both).
    public init(number: Int, ranges: [ByteRange], typeName: String,
                mbrType: UInt8? = nil, gptTypeGUID: String? = nil, gptName: String? = nil, partUUID: String? = nil) {
        precondition(!ranges.isEmpty, "a partition of no ranges")
        self.number = number
        self.ranges = ranges
        sizeBytes = ranges.reduce(0) { $0 + $1.length }
        self.typeName = typeName
        self.mbrType = mbrType
        self.gptTypeGUID = gptTypeGUID
        self.gptName = gptName
        self.partUUID = partUUID
    }

    /// One range of the image: what a loop device with offset and size limit (or one pread) can serve.
    /// Everything that reads or writes the partition by startByte and sizeBytes must check this first.
    public var isContiguous: Bool { ranges.count == 1 }

    /// Why a consumer that can only use one range refuses this partition (one log line), nil when it is one.
    public func notContiguousReason(_ what: String) -> String? {
        isContiguous ? nil : "\(what): \(typeName) lies in \(ranges.count) separate ranges of the image: not supported here"
    }

    /// An MBR extended partition: a container of logical partitions, not a filesystem.
    public var isExtendedContainer: Bool {
        guard let t = mbrType else { return false }
        return MBR.extendedTypes.contains(t)
    }
}

public struct PartitionTable: Sendable {
    public let scheme: PartitionScheme
    /// In the order Linux numbers them.
    public let partitions: [Partition]
    public let diskSize: UInt64
    /// Irregularities that were accepted, one line each for the caller's log (a GPT without a usable
    /// backup, as OpenWrt's ptgen writes it; a hybrid MBR whose GPT was used).
    public let notices: [String]

    public init(scheme: PartitionScheme, partitions: [Partition], diskSize: UInt64, notices: [String] = []) {
        self.scheme = scheme
        self.partitions = partitions
        self.diskSize = diskSize
        self.notices = notices
    }

    func adding(notice: String) -> PartitionTable {
        PartitionTable(scheme: scheme, partitions: partitions, diskSize: diskSize, notices: notices + [notice])
    }
}
