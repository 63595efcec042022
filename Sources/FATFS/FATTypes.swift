import Glibc

/// Node IDs handed to the FUSE layer: 1 is the root, others are counter-allocated and never reused.
public typealias FATNodeID = UInt64

/// A point in time (Unix epoch, UTC).
public struct FATTime: Sendable, Equatable, Comparable, CustomStringConvertible {
    public var seconds: Int64
    public var nanoseconds: Int32

    public init(seconds: Int64, nanoseconds: Int32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public static func now() -> FATTime {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return FATTime(seconds: Int64(ts.tv_sec), nanoseconds: Int32(ts.tv_nsec))
    }

    public static func < (a: FATTime, b: FATTime) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }

    public var description: String { "\(seconds).\(nanoseconds)" }
}

public enum FATType: String, Sendable, Equatable {
    case fat12 = "FAT12", fat16 = "FAT16", fat32 = "FAT32"
}

/// What a FUSE getattr needs. Owner root, mode 0755 like Linux vfat's defaults under umask 022.
public struct FATAttr: Sendable, Equatable {
    public var id: FATNodeID
    public var isDirectory: Bool
    public var size: UInt64
    public var mode: UInt32
    /// 1 for directories too: "unknown", as btrfs does, so find does not leaf-optimise.
    public var nlink: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// 512-byte units allocated.
    public var blocks: UInt64
    public var blockSize: UInt32
    public var atime: FATTime
    public var mtime: FATTime
    public var ctime: FATTime
    public var crtime: FATTime
}

public struct FATDirectoryEntry: Sendable, Equatable {
    public var name: String
    public var isDirectory: Bool
    /// The readdir offset to resume after this entry.
    public var nextOffset: UInt64
}

public struct FATRenameFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let noReplace = FATRenameFlags(rawValue: 1)   // RENAME_NOREPLACE
    public static let exchange = FATRenameFlags(rawValue: 2)    // RENAME_EXCHANGE: not supported (EINVAL)
}

public struct FATStatfs: Sendable, Equatable {
    public var blockSize: UInt32
    public var fragmentSize: UInt32
    public var blocks: UInt64
    public var freeBlocks: UInt64
    public var availableBlocks: UInt64
    public var files: UInt64
    public var freeFiles: UInt64
    public var nameMax: UInt32
}

public struct FATVolumeInfo: Sendable, Equatable {
    public var type: FATType
    public var bytesPerSector: Int
    public var sectorsPerCluster: Int
    public var clusterSize: Int
    public var clusterCount: Int
    public var fatCount: Int
    public var label: String?
    public var serial: UInt32?
    /// The dirty flag was already set when the volume was opened (it is then left set, as Linux does).
    public var wasDirty: Bool
}
