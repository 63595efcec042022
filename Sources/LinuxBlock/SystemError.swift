import CLinux
import Glibc

/// Every failure of a system call, in LinuxBlock and SandboxFS alike: the operation, the object (device
/// or path) and the errno.
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
    public var description: String { "\(operation) \(object): \(Self.describe(errno))" }

    /// "Device or resource busy (EBUSY)": the one way errno is printed.
    public static func describe(_ code: Int32) -> String {
        "\(String(cString: strerror(code))) (\(name(code)))"
    }

    /// "EBUSY"; "errno 4242" for a number without a name.
    public static func name(_ code: Int32) -> String {
        clinux_errno_name(code).map { String(cString: $0) } ?? "errno \(code)"
    }
}

/// The one funnel for system calls: returns the result, or throws SystemError with the saved errno when
/// the call returns a negative value (-1); retries EINTR. `object` is only built on failure.
@discardableResult
public func systemCall<T: BinaryInteger>(
    _ operation: String, _ object: @autoclosure () -> String, _ body: () -> T
) throws(SystemError) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let saved = Glibc.errno
        if saved == EINTR { continue }
        throw SystemError(operation, object(), errno: saved)
    }
}
