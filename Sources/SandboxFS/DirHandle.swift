import Glibc
import LinuxBlock
import Synchronization

/// An open passthrough directory: a DIR stream and where the kernel last left off. Its lock comes first
/// in the lock order (a readdirplus registers nodes while holding it); the stream is only used inside it.
final class DirHandle: Sendable {
    // @unchecked: the DIR* is used only inside `stream`'s lock (withStream, close) and never leaves it.
    struct Stream: @unchecked Sendable {
        var dir: OpaquePointer?
        /// The telldir position the next entry starts at, as last reported to the kernel.
        var offset: Int64 = 0
    }

    let serial: UInt64
    let mountID: Int32
    /// st_ino as the caller sees it through FUSE.
    let inode: UInt64
    /// The directory's st_dev on the hidden mount: readdir's d_ino values are numbered as on its filesystem.
    let dev: UInt64
    private let stream: Mutex<Stream>

    init(serial: UInt64, mountID: Int32, inode: UInt64, dev: UInt64, dir: OpaquePointer) {
        self.serial = serial
        self.mountID = mountID
        self.inode = inode
        self.dev = dev
        stream = Mutex(Stream(dir: dir))
    }

    deinit { close() }

    func withStream<R>(_ body: (OpaquePointer, inout Stream) throws -> R) throws -> R {
        try stream.withLock { s in
            guard let dir = s.dir else { throw SystemError("readdir", "closed directory of sandbox \(serial)", errno: EBADF) }
            return try body(dir, &s)
        }
    }

    /// withStream, the stream first moved to `offset` (a position given to the kernel) when it is elsewhere.
    func withStream<R>(at offset: off_t, _ body: (OpaquePointer, inout Stream) throws -> R) throws -> R {
        try withStream { dir, s in
            if Int64(offset) != s.offset {
                Self.seek(dir, Int64(offset))
                s.offset = Int64(offset)
            }
            return try body(dir, &s)
        }
    }

    /// The stream's next entry, nil at its end. A read error is thrown only for the first entry of a reply
    /// (`first`); later, the reply ends there and the kernel's next readdir meets it.
    func next(_ dir: OpaquePointer, first: Bool) throws -> UnsafeMutablePointer<dirent>? {
        errno = 0
        if let entry = SwiftGlibc.readdir(dir) { return entry }
        let saved = errno
        if saved != 0 && first { throw SystemError("readdir", "sandbox \(serial)", errno: saved) }
        return nil
    }

    /// Moves the stream back to where the kernel last left off: the entry just read goes into the next reply.
    static func unread(_ dir: OpaquePointer, _ stream: Stream) {
        seek(dir, stream.offset)
    }

    private static func seek(_ dir: OpaquePointer, _ offset: Int64) {
        if offset == 0 { rewinddir(dir) } else { seekdir(dir, Int(offset)) }
    }

    func close() {
        stream.withLock { s in
            if let dir = s.dir { closedir(dir) }
            s.dir = nil
        }
    }
}
