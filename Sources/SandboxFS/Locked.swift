import Glibc

/// A value behind a pthread mutex, with a condition to wait for a change of it. Used instead of
/// Synchronization.Mutex so that class references can be handed out of the critical section without
/// region-isolation ceremony. Never call fuse_reply_* or the provider inside `withLock`.
final class Locked<State>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let changed: UnsafeMutablePointer<pthread_cond_t>
    private var state: State

    init(_ state: State) {
        self.state = state
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        // A monotonic clock: waits are bounded in elapsed time, whatever happens to the wall clock.
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        changed = .allocate(capacity: 1)
        changed.initialize(to: pthread_cond_t())
        pthread_cond_init(changed, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(changed)
        changed.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }

    /// Waits (lock released meanwhile) until `ready` holds or `timeout` seconds have passed, then runs
    /// `body` under the lock, telling it whether `ready` held. Woken by `broadcast()`, never by polling.
    func withLock<R>(waitingUpTo timeout: Double, until ready: (State) -> Bool,
                     _ body: (inout State, _ ready: Bool) throws -> R) rethrows -> R {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let whole = Int(max(timeout, 0))
        var nanoseconds = Int(deadline.tv_nsec) + Int((max(timeout, 0) - Double(whole)) * 1e9)
        deadline.tv_sec += whole + nanoseconds / 1_000_000_000
        nanoseconds %= 1_000_000_000
        deadline.tv_nsec = nanoseconds
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        var isReady = ready(state)
        while !isReady {
            let rc = pthread_cond_timedwait(changed, mutex, &deadline)
            isReady = ready(state)
            if rc == ETIMEDOUT { break }
        }
        return try body(&state, isReady)
    }

    /// Wakes every `withLock(waitingUpTo:)` to re-check its condition; call after changing what it tests.
    func broadcast() {
        pthread_cond_broadcast(changed)
    }
}
