import FoundationEssentials
import ImageCache
import Sandbox

/// One sandbox in `status` output; JSON keys are the snake_case of these names (cow_used_bytes, ...).
struct StatusRow: Codable {
    var mountpoint: String
    var image: String
    var sandbox: String
    var engine: String
    var state: String
    var cowUsedBytes: UInt64
    var cowTotalBytes: UInt64
    var cowMaxBytes: UInt64
    var cowStore: String
    var zramOriginalBytes: UInt64
    var zramCompressedBytes: UInt64
    var zramMemoryBytes: UInt64
    var fsSizeBytes: UInt64
    var fsFreeBytes: UInt64
    var mountPath: String
    /// The image's other partitions in the sandbox: mount point, filesystem, their own COW use.
    var partitions: [Partition]

    struct Partition: Codable {
        var number: Int
        var mountPoint: String
        var filesystem: String
        var cowUsedBytes: UInt64
        var cowTotalBytes: UInt64
    }
    /// How file data moves: passthrough, splice or copy (absent from daemons older than this field).
    var dataPath: String?
    /// Which partition is the root and why (absent from daemons older than this field).
    var root: String?

    init(mountpoint: String, dataPath: String, _ status: SandboxStatus) {
        self.dataPath = dataPath
        let usage = status.usage
        self.mountpoint = mountpoint
        image = status.image
        sandbox = status.sandbox
        engine = status.engine
        state = usage.state.rawValue
        cowUsedBytes = usage.cowUsedBytes
        cowTotalBytes = usage.cowTotalBytes
        cowMaxBytes = max(usage.cowMaxBytes, usage.cowTotalBytes)
        cowStore = usage.cowStore
        zramOriginalBytes = usage.zramOriginalBytes
        zramCompressedBytes = usage.zramCompressedBytes
        zramMemoryBytes = usage.zramMemoryBytes
        fsSizeBytes = usage.filesystemSizeBytes
        fsFreeBytes = usage.filesystemFreeBytes
        mountPath = status.mountPath
        root = status.root
        partitions = status.partitions.map {
            Partition(number: $0.number, mountPoint: $0.mountPoint, filesystem: $0.filesystem,
                      cowUsedBytes: $0.cowUsedBytes, cowTotalBytes: $0.cowTotalBytes)
        }
    }

    struct Document: Codable {
        var sandboxes: [StatusRow]
        /// Images being made raw in the cache (absent from older daemons' answers).
        var preparing: [PreparingRow]? = nil
        /// Dead instances the start-up sweep could not release yet (only in `status`'s own output).
        var unswept: [StaleInstanceSweep.Leftover]? = nil
        /// One per daemon asked (absent from older daemons' answers).
        var daemons: [DaemonRow]? = nil
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }()
}

/// One daemon in `status --json` (`daemons` array): the FUSE requests it received per operation since it
/// mounted (kernel opcode names in lowercase: lookup, create, getxattr, ...; zeros included).
struct DaemonRow: Codable {
    var mountpoint: String
    var fuseRequests: [String: UInt64]
}

/// An image being made raw in the cache (decompressed, extracted, converted), in `status` output (`preparing` array).
struct PreparingRow: Codable {
    var mountpoint: String
    var image: String
    var file: String
    var format: String
    var compressedBytesDone: UInt64
    var compressedBytesTotal: UInt64
    var bytesDone: UInt64
    /// 0 when the format does not record it up front (gzip, zstd, bzip2).
    var bytesTotal: UInt64
    var mibPerSecond: Double
    var seconds: Double

    init(mountpoint: String, _ status: PreparationStatus) {
        self.mountpoint = mountpoint
        image = status.image
        file = status.file
        format = status.format
        compressedBytesDone = status.compressedBytesDone
        compressedBytesTotal = status.compressedBytesTotal
        bytesDone = status.bytesDone
        bytesTotal = status.bytesTotal
        mibPerSecond = (status.mibPerSecond * 10).rounded() / 10
        seconds = (status.seconds * 10).rounded() / 10
    }
}
