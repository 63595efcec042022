import Glibc
import Sandbox

/// Every failure in this layer ends as an errno for the kernel; the operation and object are kept for the log.
struct FSError: Error, CustomStringConvertible {
    let code: Int32
    let operation: String
    let object: String

    init(_ code: Int32, _ operation: String, _ object: String) {
        self.code = code
        self.operation = operation
        self.object = object
    }

    var description: String { "\(operation) \(object): \(String(cString: strerror(code))) (errno \(code))" }
}

/// The errno funnel: -1 (or any negative) from a syscall becomes an FSError carrying the current errno.
@discardableResult
func sys<T: BinaryInteger>(_ operation: String, _ object: @autoclosure () -> String, _ call: () -> T) throws -> T {
    while true {
        let rc = call()
        if rc >= 0 { return rc }
        let saved = errno
        if saved == EINTR { continue }
        throw FSError(saved, operation, object())
    }
}

/// The errno a caller should see for any error thrown below a request.
func errnoCode(of error: any Error) -> Int32 {
    switch error {
    case let e as FSError: return e.code
    case let e as any ErrnoCarrying: return e.errno
    default: return EIO
    }
}
