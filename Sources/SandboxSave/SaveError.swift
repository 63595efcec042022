import Glibc
import LinuxBlock

/// Why a save stopped: what it was doing and the errno.
public struct SaveError: Error, Sendable, CustomStringConvertible {
    public let what: String
    public let errno: Int32

    public init(_ what: String, errno: Int32) {
        self.what = what
        self.errno = errno
    }

    public var description: String { "\(what): \(SystemError.describe(errno))" }
}
