import Glibc
import LinuxBlock
import Synchronization

/// A stack of undo actions. Creation pushes one per kernel object it made; on failure, and again at the
/// end of the object's life, the stack runs in reverse order, so release always mirrors creation.
/// Thread-safe: one lock guards the stack, held while steps run, so a push or a second run waits for a
/// run in progress instead of racing it (lock order: docs/ARCHITECTURE.md, Locking).
public final class Teardown: Sendable {
    private struct Step {
        let name: String
        let undo: @Sendable () throws -> Void
    }

    private struct State {
        var steps: [Step] = []
        /// Steps undone so far: once one is, the object is no longer whole.
        var undone = 0
    }

    /// Held while the steps run.
    private let state = Mutex(State())

    public init() {}

    public func push(_ name: String, _ undo: @escaping @Sendable () throws -> Void) {
        let step = Step(name: name, undo: undo)
        state.withLock { $0.steps.append(step) }
    }

    /// Hands `fd` to this teardown: its step closes it (and so does dropping a teardown that never ran).
    /// Returns the number for users that live no longer than the object this teardown undoes.
    public func own(_ fd: consuming FileDescriptor, _ name: String) -> Int32 {
        let raw = fd.raw
        let slot = DescriptorSlot(fd)
        push("close \(name)") { slot.close() }
        return raw
    }

    /// Some step has been undone: the object is no longer whole.
    public var hasUndone: Bool { state.withLock { $0.undone > 0 } }

    /// Runs the steps newest first and stops at the first that fails, leaving it and the ones below it on
    /// the stack: what the failed object depends on must not be pulled from under it. Used by destroy, where
    /// the caller can report the error and keep the object; `TeardownError.partial` says whether some of it
    /// is already gone (then it must not be used again, only torn down further by another run).
    public func run() throws(TeardownError) {
        try state.withLock { state throws(TeardownError) in
            while let step = state.steps.last {
                do {
                    try step.undo()
                } catch {
                    throw TeardownError(step: step.name, underlying: error, partial: state.undone > 0)
                }
                state.steps.removeLast()
                state.undone += 1
            }
        }
    }

    /// Best effort for failure paths: runs every step, newest first, even past failures, and returns what
    /// could not be undone.
    @discardableResult
    public func runAll() -> [TeardownError] {
        state.withLock { state in
            var failures: [TeardownError] = []
            while let step = state.steps.popLast() {
                do { try step.undo() } catch { failures.append(TeardownError(step: step.name, underlying: error, partial: true)) }
                state.undone += 1
            }
            return failures
        }
    }
}

/// An fd held by a teardown step (a closure cannot hold a non-copyable value itself).
private final class DescriptorSlot: Sendable {
    private let fd: Mutex<FileDescriptor?>
    init(_ fd: consuming FileDescriptor) { self.fd = Mutex(.some(fd)) }
    func close() { fd.withLock { $0 = nil } }
}

public struct TeardownError: Error, ErrnoCarrying, CustomStringConvertible {
    public let step: String
    public let underlying: any Error
    /// Steps before this one were undone: the object is half torn down.
    public let partial: Bool
    public var errno: Int32 { (underlying as? any ErrnoCarrying)?.errno ?? EIO }
    public var description: String { "undoing \(step): \(underlying)" }
}
