import Glibc
import LinuxBlock

/// Why an image could not be prepared; `errno` is what mkdir of its sandbox returns.
public enum CacheError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The compressed data is corrupt, truncated or not of its format: EIO. `offset` is the compressed
    /// file's offset where the decoder stopped, `outputOffset` the bytes it had produced.
    case corrupt(file: String, format: String, offset: UInt64, outputOffset: UInt64, reason: String)
    /// The headers are refused before any data is decoded (an xz index that does not match the file).
    case hostileHeader(file: String, reason: String)
    /// The cache cannot hold the image: --cache-max reached with nothing unused left to evict, or the disk is full.
    case noRoom(file: String, reason: String)
    /// A system call failed.
    case system(operation: String, path: String, errno: Int32)
    /// The compressed file changed while it was read.
    case sourceChanged(file: String)
    /// The daemon is shutting down.
    case cancelled(file: String)
    /// Not read by policy: a VM disk naming another file (backing file, data file, extent), an archive
    /// holding no image or an image entry that is a link, absurd declared sizes.
    case refused(file: String, reason: String)
    /// qemu-img failed (a corrupt or unsupported VM disk): its last line of stderr.
    case helperFailed(file: String, command: String, status: Int32, message: String)

    public var errno: Int32 {
        switch self {
        case .corrupt, .hostileHeader, .sourceChanged, .helperFailed: EIO
        case .refused: EPERM
        case .noRoom: ENOSPC
        case .system(_, _, let errno): errno
        case .cancelled: ECANCELED
        }
    }

    /// Worth remembering for an unchanged file: decoding it again would fail the same way.
    var isPermanent: Bool {
        switch self {
        case .corrupt, .hostileHeader, .refused: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .corrupt(let file, let format, let offset, let outputOffset, let reason):
            "\(file): corrupt \(format) data at compressed offset \(offset) (uncompressed offset \(outputOffset)): \(reason); nothing cached"
        case .hostileHeader(let file, let reason): "\(file): refused: \(reason); nothing cached"
        case .noRoom(let file, let reason): "\(file): no room in the cache: \(reason); nothing cached"
        case .system(let operation, let path, let errno):
            "\(operation) \(path): \(String(cString: strerror(errno))) (errno \(errno))"
        case .sourceChanged(let file): "\(file) changed while it was decompressed; nothing cached"
        case .cancelled(let file): "\(file): preparation cancelled (shutting down); nothing cached"
        case .refused(let file, let reason): "\(file): refused: \(reason); nothing read into the cache"
        case .helperFailed(let file, let command, let status, let message):
            "\(file): \(command) failed with status \(status)\(message.isEmpty ? "" : ": " + message); nothing cached"
        }
    }
}

extension CacheError {
    /// FileDescriptor.open for the cache: a failure is `.system` naming `path` and `operation`.
    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0,
                     operation: String = "open") throws(CacheError) -> FileDescriptor {
        do {
            return try FileDescriptor.open(path, flags, mode: mode)
        } catch {
            throw .system(operation: operation, path: path, errno: error.errno)
        }
    }
}
