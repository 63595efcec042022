import Synchronization

/// Keeps the reads of a sandbox's state (status, the COW watcher) and its teardown apart. A statvfs on
/// the hidden mount holds a reference on it for the call, and umount2 answers EBUSY while one is in
/// flight: so usage is read only while the sandbox is alive, and teardown waits for readers to finish.
final class SandboxAccess: Sendable {
    private let alive = Mutex(true)

    /// Runs `read` unless the sandbox is torn down; nil then.
    func ifAlive<T>(_ read: () -> T) -> T? {
        alive.withLock { alive in alive ? read() : nil }
    }

    /// Runs the teardown with no reader in flight; the sandbox counts as gone only if it succeeded.
    func retire<E: Error>(_ teardown: () throws(E) -> Void) throws(E) {
        try alive.withLock { (alive: inout Bool) throws(E) in
            try teardown()
            alive = false
        }
    }
}
