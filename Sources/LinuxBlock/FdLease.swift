import Dispatch
import Glibc
import Synchronization

/// A file descriptor shared by concurrent users (FUSE requests, loop device ioctls). `acquire` hands out the fd and counts the user;
/// `retire` stops new users and closes the fd as soon as the last one releases it, so an fd is never
/// closed (and its number reused) under a request that is still using it.
/// Lock order: `state` is a leaf (nothing else is locked or waited for while it is held).
public final class FdLease: Sendable {
    private let fd: Int32
    private let state: Mutex<State>

    private struct State: ~Copyable {
        /// Owns `fd` until the lease closes it (sets this to nil).
        var owned: FileDescriptor?
        var users = 0
        var retired = false
        /// Run once the fd is closed (outside the lock): retireAndWait's wake-ups, retire(whenClosed:)'s work.
        var onClose: [@Sendable () -> Void] = []
        var closed = false

        /// Closes once retired and unused; returns what is to run now that it is closed.
        mutating func closeIfIdle() -> [@Sendable () -> Void] {
            guard retired, users == 0, !closed else { return [] }
            owned = nil
            closed = true
            defer { onClose = [] }
            return onClose
        }
    }

    public init(_ fd: consuming FileDescriptor) {
        self.fd = fd.raw
        state = Mutex(State(owned: fd))
    }

    /// Adopts a bare fd (the FUSE layer's, until it holds FileDescriptors).
    public convenience init(fd: Int32) {
        self.init(FileDescriptor(adopting: fd))
    }

    /// The fd, counted as in use until `release`; nil once retired.
    public func acquire() -> Int32? {
        state.withLock { state in
            guard !state.retired else { return nil }
            state.users += 1
            return fd
        }
    }

    public func release() {
        let woken = state.withLock { state in
            state.users -= 1
            return state.closeIfIdle()
        }
        woken.forEach { $0() }
    }

    /// No new users; closes now if idle, else when the last user releases.
    public func retire() {
        let woken = state.withLock { state in
            state.retired = true
            return state.closeIfIdle()
        }
        woken.forEach { $0() }
    }

    /// Retires and runs `closed` once the fd is closed: at once if idle, else on the thread of the last
    /// user's `release`. For a caller that must not block until then (a FUSE queue thread).
    public func retire(whenClosed closed: @escaping @Sendable () -> Void) {
        let ready = state.withLock { state -> [@Sendable () -> Void] in
            state.retired = true
            guard !state.closed else { return [closed] }
            state.onClose.append(closed)
            return state.closeIfIdle()
        }
        ready.forEach { $0() }
    }

    /// Retires and blocks until the fd is closed. Only for teardown, where users are short requests.
    public func retireAndWait() {
        let closed = DispatchSemaphore(value: 0)
        retire(whenClosed: { closed.signal() })
        closed.wait()
    }
}

extension FdLease {
    /// Runs `body` with the fd held; EBADF (or `errno`) when the lease is retired.
    @discardableResult
    public func with<R>(orErrno code: Int32 = EBADF, _ body: (Int32) throws -> R) throws -> R {
        guard let fd = acquire() else { throw SystemError("use fd", "retired descriptor", errno: code) }
        defer { release() }
        return try body(fd)
    }
}
