import CLinux
import Glibc

/// An open file descriptor with exactly one owner. Non-copyable, so the compiler proves it is closed once:
/// when its owner (a local, a stored property, a Teardown step) goes away, or never here after `take()`
/// handed the number to something else that closes it (the kernel, another process, FdLease).
/// Code that only uses the fd borrows `raw` and must not keep it longer than the owner lives.
public struct FileDescriptor: ~Copyable, Sendable {
    public let raw: Int32

    /// Takes ownership of an open fd (`raw` >= 0).
    public init(adopting raw: Int32) {
        self.raw = raw
    }

    /// open(2) with O_CLOEXEC added; EINTR retried; the error names `path`.
    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0) throws(SystemError) -> FileDescriptor {
        FileDescriptor(adopting: try systemCall("open", path) { Glibc.open(path, flags | O_CLOEXEC, mode) })
    }

    /// openat(2) relative to `directory`, with O_CLOEXEC added; the error names `path`.
    public static func open(at directory: borrowing FileDescriptor, _ path: String, _ flags: Int32,
                            mode: mode_t = 0) throws(SystemError) -> FileDescriptor {
        FileDescriptor(adopting: try systemCall("openat", path) { openat(directory.raw, path, flags | O_CLOEXEC, mode) })
    }

    /// pipe2(O_CLOEXEC): the read end and the write end.
    public static func pipe(naming object: @autoclosure () -> String) throws(SystemError) -> Pipe {
        var ends: [Int32] = [-1, -1]
        guard clinux_pipe_cloexec(&ends) == 0 else { throw SystemError("pipe2", object(), errno: errno) }
        return Pipe(read: FileDescriptor(adopting: ends[0]), write: FileDescriptor(adopting: ends[1]))
    }

    /// Gives up ownership without closing: the caller now owns the number.
    public consuming func take() -> Int32 {
        let raw = self.raw
        discard self
        return raw
    }

    deinit { Glibc.close(raw) }
}

/// Both ends of a pipe, each owned (frozen: other modules take the ends apart).
@frozen
public struct Pipe: ~Copyable, Sendable {
    public var read: FileDescriptor
    public var write: FileDescriptor
}

/// Several owned fds that go together (what a spawn hands its child): closed when the set goes, or at
/// `closeAll` (after the spawn).
public struct DescriptorSet: ~Copyable {
    private var raws: [Int32] = []

    public init() {}

    /// Adds `fd` to the set; returns its number for the spawn.
    @discardableResult
    public mutating func insert(_ fd: consuming FileDescriptor) -> Int32 {
        let raw = fd.take()
        raws.append(raw)
        return raw
    }

    public mutating func closeAll() {
        raws.forEach { Glibc.close($0) }
        raws = []
    }

    deinit { raws.forEach { Glibc.close($0) } }
}
