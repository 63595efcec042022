import Glibc
import LinuxBlock

/// A ready cache file held in use: while this object lives, its shared flock keeps the cache from
/// evicting the file (in this daemon or another one sharing the cache directory). Engines attach a
/// read-only loop device on `path`.
public final class CachedImage: Sendable {
    /// The decompressed image: a sparse regular file in the cache directory.
    public let path: String
    /// Apparent size of the decompressed image.
    public let size: UInt64
    /// True when an earlier decompression was reused.
    public let reused: Bool
    /// Holds the shared flock.
    private let fd: FileDescriptor
    private let recordPath: String

    init(path: String, recordPath: String, fd: consuming FileDescriptor, size: UInt64, reused: Bool) {
        self.path = path
        self.recordPath = recordPath
        self.fd = fd
        self.size = size
        self.reused = reused
        Self.touch(recordPath)
    }

    deinit {
        // Last use: what least-recently-used eviction orders by.
        Self.touch(recordPath)
    }

    /// Sets the record's times from the precise clock (the kernel's file times tick coarsely, and two
    /// uses within a tick must still be ordered).
    static func touch(_ path: String) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var times = (now, now)
        _ = withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(AT_FDCWD, path, $0, 0) } }
    }
}

/// One image being made raw (decompressed, extracted or converted), as `status` shows it.
public struct PreparationStatus: Sendable, Codable, Equatable {
    public var image: String
    public var file: String
    /// ImageFileName.label: `xz`, `zip`, `qcow2.xz` ...
    public var format: String
    public var compressedBytesDone: UInt64
    public var compressedBytesTotal: UInt64
    public var bytesDone: UInt64
    /// The raw size when the format records it up front (xz, archives, VM disks), else 0.
    public var bytesTotal: UInt64
    public var seconds: Double

    /// Decompressed MiB per second so far.
    public var mibPerSecond: Double { seconds > 0 ? Double(bytesDone) / 1_048_576 / seconds : 0 }
}
