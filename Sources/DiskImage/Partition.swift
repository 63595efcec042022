public enum PartitionScheme: String, Sendable {
    case mbr, gpt
    /// No partition table: the whole file is one filesystem.
    case none
}

public struct Partition: Sendable, Equatable {
    /// As Linux numbers them: MBR primaries 1-4, logicals 5+; GPT entry index + 1; 0 for a whole-disk fs.
    public let number: Int
    public let startByte: UInt64
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
        self.number = number
        self.startByte = startByte
        self.sizeBytes = sizeBytes
        self.typeName = typeName
        self.mbrType = mbrType
        self.gptTypeGUID = gptTypeGUID
        self.gptName = gptName
        self.partUUID = partUUID
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
