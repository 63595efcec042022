import Synchronization

/// Keeps the reads of a sandbox's state (status, the COW watcher) and its teardown apart. A statvfs on
/// the hidden mount holds a reference on it for the call, and umount2 answers EBUSY while one is in
/// flight: so usage is read only while the sandbox is alive, and teardown waits for readers to finish.
///
/// Long users (diff, save) do not hold the lock: they are counted, and teardown refuses while any is in.
final class SandboxAccess: Sendable {
    private struct State {
        var alive = true
        var users = 0
    }
    private let state = Mutex(State())

    /// Runs `read` unless the sandbox is torn down; nil then.
    func ifAlive<T>(_ read: () -> T) -> T? {
        state.withLock { state in state.alive ? read() : nil }
    }

    /// Runs `body` with the sandbox kept alive (teardown refuses meanwhile); nil when it is torn down.
    func using<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T? {
        let entered = state.withLock { state -> Bool in
            if state.alive { state.users += 1 }
            return state.alive
        }
        guard entered else { return nil }
        defer { state.withLock { $0.users -= 1 } }
        return try body()
    }

    /// Runs the teardown with no reader in flight and no user in. Throws `busy` while a user is in. After a
    /// failure the sandbox stays readable only if `whole()` says the teardown undid nothing.
    func retire<E: Error>(busy: E, whole: () -> Bool, _ teardown: () throws(E) -> Void) throws(E) {
        try state.withLock { (state: inout State) throws(E) in
            if state.users > 0 { throw busy }
            do throws(E) {
                try teardown()
            } catch {
                if !whole() { state.alive = false }
                throw error
            }
            state.alive = false
        }
    }
}
