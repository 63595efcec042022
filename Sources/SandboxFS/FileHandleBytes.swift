import CLinux
import Glibc
import LinuxBlock

/// A kernel file handle (struct file_handle from name_to_handle_at) kept compactly: the node table holds one
/// per known inode, so the common sizes live inline (f_handle: 8 bytes on ext4, ~32 on overlayfs over ext4)
/// and only longer ones (overlayfs over btrfs ~44, up to MAX_HANDLE_SZ) take a heap array.
struct FileHandleBytes: Equatable {
    /// f_handle bytes kept inline: 40, i.e. a 48-byte struct file_handle with its header.
    static let inlineCapacity = 40

    private enum Storage {
        case inline(type: Int32, count: UInt8, bytes: InlineArray<40, UInt8>)
        case heap(type: Int32, bytes: [UInt8])
    }

    private let storage: Storage

    /// `bytes` are the f_handle part only; `type` is handle_type.
    init(type: Int32, bytes: UnsafeRawBufferPointer) {
        if bytes.count <= Self.inlineCapacity {
            var inline = InlineArray<40, UInt8>(repeating: 0)
            withUnsafeMutableBytes(of: &inline) { $0.copyMemory(from: bytes) }
            storage = .inline(type: type, count: UInt8(bytes.count), bytes: inline)
        } else {
            storage = .heap(type: type, bytes: Array(bytes))
        }
    }

    init(type: Int32, bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { FileHandleBytes(type: type, bytes: $0) }
    }

    var handleType: Int32 {
        switch storage {
        case .inline(let type, _, _), .heap(let type, _): type
        }
    }

    /// handle_bytes: the length of f_handle.
    var count: Int {
        switch storage {
        case .inline(_, let count, _): Int(count)
        case .heap(_, let bytes): bytes.count
        }
    }

    var isInline: Bool {
        if case .inline = storage { true } else { false }
    }

    /// The f_handle bytes, for `body` only.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch storage {
        case .inline(_, let count, let bytes):
            try withUnsafeBytes(of: bytes) { try body(UnsafeRawBufferPointer(rebasing: $0.prefix(Int(count)))) }
        case .heap(_, let bytes):
            try bytes.withUnsafeBytes(body)
        }
    }

    /// A struct file_handle (header + f_handle) assembled on the stack, as open_by_handle_at takes it.
    func withFileHandle<R>(_ body: (UnsafeRawPointer) throws -> R) rethrows -> R {
        let length = count
        return try withUnsafeTemporaryAllocation(byteCount: 8 + length, alignment: 4) { buffer in
            buffer.storeBytes(of: UInt32(length), toByteOffset: 0, as: UInt32.self)
            buffer.storeBytes(of: handleType, toByteOffset: 4, as: Int32.self)
            withBytes { UnsafeMutableRawBufferPointer(rebasing: buffer[8...]).copyMemory(from: $0) }
            return try body(UnsafeRawPointer(buffer.baseAddress!))
        }
    }

    static func == (a: FileHandleBytes, b: FileHandleBytes) -> Bool {
        a.handleType == b.handleType && a.count == b.count
            && a.withBytes { x in b.withBytes { y in x.elementsEqual(y) } }
    }

    /// The handle of the inode `fd` refers to (fd may be O_PATH) and the id of the mount it lies on.
    static func of(fd: Int32, object: @autoclosure () -> String) throws -> (handle: FileHandleBytes, mountID: Int32) {
        let capacity = 8 + Int(clinux_MAX_HANDLE_SZ)
        return try withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 4) { buffer in
            var mountID: Int32 = 0
            let length = try systemCall("name_to_handle_at", object()) {
                clinux_name_to_handle_at(fd, "", buffer.baseAddress, capacity, &mountID, clinux_AT_EMPTY_PATH)
            }
            let type = buffer.load(fromByteOffset: 4, as: Int32.self)
            let handle = FileHandleBytes(type: type, bytes: UnsafeRawBufferPointer(rebasing: buffer[8..<Int(length)]))
            return (handle, mountID)
        }
    }
}
