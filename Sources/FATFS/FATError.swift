import Glibc

/// Every failure of the FAT code: the errno a FUSE layer replies with and one line saying what and why.
/// On-disk content is untrusted, so every malformed structure ends up here, never in a trap.
public struct FATError: Error, Sendable, Equatable, CustomStringConvertible {
    public let errno: Int32
    public let message: String

    public init(_ errno: Int32, _ message: String) {
        self.errno = errno
        self.message = message
    }

    public var description: String { "\(message) (\(String(cString: strerror(errno))))" }

    /// A malformed on-disk structure met while working: EIO, as Linux fat_fs_error reports it.
    static func corrupt(_ message: String) -> FATError { FATError(EIO, "corrupt FAT volume: " + message) }
    /// A boot sector that cannot describe a FAT volume: EINVAL, as a failed mount.
    static func badBootSector(_ message: String) -> FATError { FATError(EINVAL, "invalid FAT boot sector: " + message) }
    static func notFound(_ name: String) -> FATError { FATError(ENOENT, "no such entry: \(name)") }
    static let readOnly = FATError(EROFS, "the FAT volume is read-only")
    static func noSpace(_ what: String) -> FATError { FATError(ENOSPC, what) }
}
