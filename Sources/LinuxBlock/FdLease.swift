import Glibc

/// A file descriptor shared by concurrent users (FUSE requests, loop device ioctls). `acquire` hands out the fd and counts the user;
/// `retire` stops new users and closes the fd as soon as the last one releases it, so an fd is never
/// closed (and its number reused) under a request that is still using it.
public final class FdLease: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>
    private let fd: Int32
    /// Owns `fd` until the lease closes it (sets this to nil); deinit closes it if still open.
    private var owned: FileDescriptor?
    private var users = 0
    private var retired = false
    private var closed: Bool { owned == nil }

    public init(_ fd: consuming FileDescriptor) {
        self.fd = fd.raw
        owned = consume fd
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        cond = .allocate(capacity: 1)
        cond.initialize(to: pthread_cond_t())
        pthread_cond_init(cond, nil)
    }

    /// Adopts a bare fd (the FUSE layer's, until it holds FileDescriptors).
    public convenience init(fd: Int32) {
        self.init(FileDescriptor(adopting: fd))
    }

    deinit {
        pthread_cond_destroy(cond)
        cond.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// The fd, counted as in use until `release`; nil once retired.
    public func acquire() -> Int32? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        guard !retired else { return nil }
        users += 1
        return fd
    }

    public func release() {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        users -= 1
        closeIfIdle()
    }

    /// No new users; closes now if idle, else when the last user releases.
    public func retire() {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        retired = true
        closeIfIdle()
    }

    /// Retires and blocks until the fd is closed. Only for teardown, where users are short requests.
    public func retireAndWait() {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        retired = true
        closeIfIdle()
        while !closed { pthread_cond_wait(cond, mutex) }
    }

    private func closeIfIdle() {
        guard retired, users == 0, !closed else { return }
        owned = nil
        pthread_cond_broadcast(cond)
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
