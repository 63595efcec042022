import Glibc

/// A child of posix_spawn holds a copy of every fd of this process from clone until its exec closes the
/// O_CLOEXEC ones. An fd the daemon has just closed inside a mount (a sandbox's hidden mount) can live on
/// in such a child for that moment, and umount2 then fails with EBUSY. So spawns pass this gate shared
/// (posix_spawn returns only after the exec), and unmounts pass it alone: an unmount waits for spawns
/// in flight, on the lock, never by retrying.
/// A pthread rwlock, not a Mutex: spawns must run concurrently with each other (a Mutex would serialise
/// every posix_spawn of the daemon behind one another) and only unmounts exclude them.
public enum SpawnGate {
    // nonisolated(unsafe) proof: set once by Swift's thread-safe lazy static init, then only passed to
    // pthread_rwlock_*, which synchronise themselves.
    nonisolated(unsafe) private static let lock: UnsafeMutablePointer<pthread_rwlock_t> = {
        let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        pthread_rwlock_init(lock, nil)
        return lock
    }()

    /// Runs a spawn (its fork/clone up to the exec); many at once.
    public static func spawning<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    /// Runs `body` with no spawn in flight.
    public static func alone<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
