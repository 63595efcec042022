import Glibc

/// A name exactly as the kernel sent it: bytes, not necessarily UTF-8 (image content is untrusted and
/// may hold Latin-1 names). Copied because the C pointer dies when the callback returns.
struct RawName: Sendable, Hashable {
    let bytes: [UInt8]

    init(_ pointer: UnsafePointer<CChar>) {
        bytes = Array(UnsafeRawBufferPointer(start: pointer, count: strlen(pointer)))
    }

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// The name as UTF-8 text, or nil if it is not valid UTF-8 (virtual-tree names always are).
    var string: String? { String(validating: bytes, as: UTF8.self) }

    /// For logs: lossy text.
    var display: String { String(decoding: bytes, as: UTF8.self) }

    @discardableResult
    func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        try (bytes + [0]).withUnsafeBufferPointer { buffer in
            // Never nil: the buffer holds at least the terminating NUL.
            try buffer.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
        }
    }

    /// A single path component the passthrough may use relative to a directory fd: never "", ".", ".."
    /// (which would climb out of the sandbox root) and never containing "/".
    var isPlainComponent: Bool {
        !bytes.isEmpty && bytes != [0x2E] && bytes != [0x2E, 0x2E] && !bytes.contains(0x2F) && bytes.count <= 255
    }

    /// The errno for a name that is not a plain component: ENAMETOOLONG past NAME_MAX, as the filesystem
    /// itself answers (callers such as pjdfstest check it), EINVAL for the rest.
    var componentErrno: Int32 { bytes.count > 255 ? ENAMETOOLONG : EINVAL }
}
