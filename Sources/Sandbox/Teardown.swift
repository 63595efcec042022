import Glibc
import LinuxBlock
import Synchronization

/// A stack of undo actions. Creation pushes one per kernel object it made; on failure, and again at the
/// end of the object's life, the stack runs in reverse order, so release always mirrors creation.
/// Thread-safe: one lock guards the stack, held while steps run, so a push or a second run waits for a
/// run in progress instead of racing it (lock order: see SandboxManager).
public final class Teardown: @unchecked Sendable {
    private struct Step {
        let name: String
        let undo: () throws -> Void
    }

    /// Guards `steps` and `undone` (the undo closures are not Sendable, so a Mutex cannot hold them).
    private let lock = Mutex(())
    private var steps: [Step] = []
    /// Steps undone so far: once one is, the object is no longer whole.
    private var undone = 0

    public init() {}

    public func push(_ name: String, _ undo: @escaping () throws -> Void) {
        lock.withLock { _ in steps.append(Step(name: name, undo: undo)) }
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
    public var hasUndone: Bool { lock.withLock { _ in undone > 0 } }

    /// Runs the steps newest first and stops at the first that fails, leaving it and the ones below it on
    /// the stack: what the failed object depends on must not be pulled from under it. Used by destroy, where
    /// the caller can report the error and keep the object; `TeardownError.partial` says whether some of it
    /// is already gone (then it must not be used again, only torn down further by another run).
    public func run() throws(TeardownError) {
        try lock.withLock { _ throws(TeardownError) in
            while let step = steps.last {
                do {
                    try step.undo()
                } catch {
                    throw TeardownError(step: step.name, underlying: error, partial: undone > 0)
                }
                steps.removeLast()
                undone += 1
            }
        }
    }

    /// Best effort for failure paths: runs every step, newest first, even past failures, and returns what
    /// could not be undone.
    @discardableResult
    public func runAll() -> [TeardownError] {
        lock.withLock { _ in
            var failures: [TeardownError] = []
            while let step = steps.popLast() {
                do { try step.undo() } catch { failures.append(TeardownError(step: step.name, underlying: error, partial: true)) }
                undone += 1
            }
            return failures
        }
    }
}

/// An fd held by a teardown step (a closure cannot hold a non-copyable value itself).
private final class DescriptorSlot: Sendable {
    private let fd: Mutex<FileDescriptor?>
    init(_ fd: consuming FileDescriptor) { self.fd = Mutex(Optional(fd)) }
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
