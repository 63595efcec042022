import CFuse
import Dispatch
import Glibc
import Synchronization

/// Requests that take seconds (a sandbox's mkdir waits for an image's preparation and sets up devices; its
/// rmdir waits for releases and tears down) are answered from a thread of their own. Over io_uring,
/// libfuse runs each CPU queue's handlers in turn on one thread, so one slow handler there would stall
/// every request of that CPU, including the RELEASEs an rmdir waits for.
///
/// How many run at once is bounded by the kernel: mkdir and rmdir hold their parent directory's lock, so
/// there is at most one per image's `sandboxes` directory.
final class SlowRequests: Sendable {
    private struct State {
        var running = 0
        /// Set by `finish()`: later slow requests are answered on the request's own thread, as before.
        var finishing = false
        /// Set when the loop has ended: libfuse frees an io_uring queue's buffers when its loop returns, so a
        /// request still running then (only if the kernel ended the connection) is never answered.
        var ended = false
        /// waitUntilIdle callers, signalled when `running` comes to 0.
        var idleWaiters: [DispatchSemaphore] = []
    }

    private let state = Mutex(State())

    /// Runs `work` on a new thread; on the caller's thread once finishing or if no thread can be made.
    func start(_ work: @escaping @Sendable () -> Void) {
        let deferred = state.withLock { s in
            if !s.finishing { s.running += 1 }
            return !s.finishing
        }
        guard deferred else { return work() }
        let box = Unmanaged.passRetained(Work(body: { [self] in
            work()
            let waiters = state.withLock { s -> [DispatchSemaphore] in
                s.running -= 1
                guard s.running == 0 else { return [] }
                defer { s.idleWaiters = [] }
                return s.idleWaiters
            }
            waiters.forEach { $0.signal() }
        })).toOpaque()
        var thread = pthread_t()
        if pthread_create(&thread, nil, { argument in
            Unmanaged<Work>.fromOpaque(argument!).takeRetainedValue().body()
            return nil
        }, box) == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<Work>.fromOpaque(box).takeRetainedValue().body()
        }
    }

    /// Sends a reply unless the loop ended; under the lock, so `end()` cannot slip in between.
    func replyUnlessEnded(_ send: () -> Void) {
        state.withLock { s in if !s.ended { send() } }
    }

    /// Before the session is told to exit: no more requests go to threads of their own, and those running
    /// finish and are answered while the session still serves.
    func finish() {
        state.withLock { $0.finishing = true }
        waitUntilIdle()
    }

    /// After the loop returned: no reply is sent after this.
    func end() {
        state.withLock { $0.ended = true }
    }

    /// Waits until every started request has finished its work (the teardown after the loop must not run
    /// beside a mkdir still setting a sandbox up, as it did not when those ran on libfuse's workers).
    func waitUntilIdle() {
        let wake = DispatchSemaphore(value: 0)
        let idle = state.withLock { s -> Bool in
            guard s.running > 0 else { return true }
            s.idleWaiters.append(wake)
            return false
        }
        if !idle { wake.wait() }
    }

    private final class Work {
        let body: () -> Void
        init(body: @escaping () -> Void) { self.body = body }
    }
}

extension SandboxFileSystem {
    /// Answers `req` from its own thread (SlowRequests) with what `body` returns or throws; the caller's
    /// handler returns `.answeredElsewhere` at once.
    func respondElsewhere(_ req: fuse_req_t, _ op: StaticString, _ body: @escaping @Sendable () throws -> Reply) -> Reply {
        let request = UnsafeSendable(req)
        let uid = Caller(req).uid
        slowRequests.start { [self] in
            let outcome = Result { try RequestUID.with(uid, body) }
            slowRequests.replyUnlessEnded { respond(request.value, op) { try outcome.get() } }
        }
        return .answeredElsewhere
    }
}

/// A fuse_req_t handed to the thread that answers it. @unchecked: libfuse allows the one reply from any
/// thread, and the handler that hands it over no longer touches it (it returns `.answeredElsewhere`).
private struct UnsafeSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
