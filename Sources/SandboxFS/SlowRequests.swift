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
        /// waitUntilIdle callers, signalled when `running` comes to 0.
        var idleWaiters: [DispatchSemaphore] = []
    }

    private let state = Mutex(State())
    private let replies = ReplyThread()

    /// Runs `work` on a new thread and sends the reply it returns from the reply thread; both on the
    /// caller's thread once finishing or if no thread can be made (there the caller may send: it is the
    /// request's own thread, which on io_uring holds its queue's ring, so handing the reply over would wait
    /// for itself).
    func start(_ work: @escaping @Sendable () -> @Sendable () -> Void) {
        let threaded = state.withLock { s in
            if !s.finishing { s.running += 1 }
            return !s.finishing
        }
        guard threaded else { return work()() }
        let box = Unmanaged.passRetained(Work(body: { [self] in
            replies.send(work())
            finished()
        })).toOpaque()
        var thread = pthread_t()
        if pthread_create(&thread, nil, { argument in
            Unmanaged<Work>.fromOpaque(argument!).takeRetainedValue().body()
            return nil
        }, box) == 0 {
            pthread_detach(thread)
        } else {
            _ = Unmanaged<Work>.fromOpaque(box).takeRetainedValue()
            work()()
            finished()
        }
    }

    private func finished() {
        let waiters = state.withLock { s -> [DispatchSemaphore] in
            s.running -= 1
            guard s.running == 0 else { return [] }
            defer { s.idleWaiters = [] }
            return s.idleWaiters
        }
        waiters.forEach { $0.signal() }
    }

    /// Before the session is told to exit: no more requests go to threads of their own, and those running
    /// finish and are answered while the session still serves.
    func finish() {
        state.withLock { $0.finishing = true }
        waitUntilIdle()
    }

    /// After the loop returned: no reply is sent after this.
    func end() {
        replies.end()
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

/// Sends the slow requests' replies from one thread that lives as long as the session. Over io_uring the
/// thread that submits a ring entry's commit owns that entry in the kernel: the entry's next request is
/// prepared in that thread's context, and once the thread has exited the kernel cancels it instead (the
/// caller gets ECANCELED). libfuse 3.18 submits a reply from the thread that sends it, so a reply sent
/// from a thread that then ends broke a later, unrelated request (ConcurrencySuite, ConformanceSuite).
/// This thread waits interruptibly between replies, so that work runs at once.
private final class ReplyThread: Sendable {
    private struct State {
        var pending: [(send: @Sendable () -> Void, sent: DispatchSemaphore)] = []
        var started = false
        /// Set when the loop has ended: libfuse frees an io_uring queue's buffers when its loop returns, so a
        /// reply still pending then (only if the kernel ended the connection) is never sent.
        var ended = false
    }

    /// Held while a reply is sent, so that `end()` cannot slip in between.
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    /// Hands `send` to the thread and returns once it was sent (or dropped after `end()`).
    func send(_ send: @escaping @Sendable () -> Void) {
        let sent = DispatchSemaphore(value: 0)
        let queued = state.withLock { s -> Bool in
            guard !s.ended else { return false }
            if !s.started { s.started = startThread() }
            guard s.started else { // no thread to be had: sent from here, still better than never
                send()
                return false
            }
            s.pending.append((send, sent))
            return true
        }
        guard queued else { return }
        wake.signal()
        sent.wait()
    }

    func end() {
        state.withLock { $0.ended = true }
        wake.signal()
    }

    private func startThread() -> Bool {
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        guard pthread_create(&thread, nil, { argument in
            Unmanaged<ReplyThread>.fromOpaque(argument!).takeRetainedValue().loop()
            return nil
        }, box) == 0 else {
            _ = Unmanaged<ReplyThread>.fromOpaque(box).takeRetainedValue()
            return false
        }
        pthread_detach(thread)
        return true
    }

    private func loop() {
        while true {
            wake.wait()
            let ended = state.withLock { s -> Bool in
                for reply in s.pending {
                    if !s.ended { reply.send() }
                    reply.sent.signal()
                }
                s.pending = []
                return s.ended
            }
            if ended { return }
        }
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
            return { [self] in respond(request.value, op) { try outcome.get() } }
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
