import CLinux
import Glibc

/// Every failure: the operation, the object (device or path) and the errno.
public struct SystemError: Error, Sendable, Equatable, CustomStringConvertible {
    public let operation: String
    public let object: String
    public let errno: Int32

    public init(_ operation: String, _ object: String, errno: Int32) {
        self.operation = operation
        self.object = object
        self.errno = errno
    }

    /// "LOOP_CONFIGURE /dev/loop3: Device or resource busy (EBUSY)"
    public var description: String {
        let message = String(cString: strerror(errno))
        let name = clinux_errno_name(errno).map { String(cString: $0) } ?? "errno \(errno)"
        return "\(operation) \(object): \(message) (\(name))"
    }
}

/// The one funnel: returns the result or throws SystemError with the saved errno; retries EINTR.
@discardableResult
public func systemCall<T: FixedWidthInteger>(
    _ operation: String, _ object: String, _ body: () -> T
) throws(SystemError) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let saved = Glibc.errno
        if saved == EINTR { continue }
        throw SystemError(operation, object, errno: saved)
    }
}
