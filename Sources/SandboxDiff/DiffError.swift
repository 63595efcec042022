import Glibc
import PrintableText

/// A failed call while comparing trees: the operation, the path (escaped) and the errno.
public struct DiffError: Error, Sendable, CustomStringConvertible {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(_ operation: String, _ rawPath: [UInt8], errno: Int32) {
        self.operation = operation
        self.path = PathText.escape(rawPath)
        self.errno = errno
    }

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}
