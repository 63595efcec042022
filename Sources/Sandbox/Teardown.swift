import Glibc

/// A stack of undo actions. Creation pushes one per kernel object it made; on failure, and again at the
/// end of the object's life, the stack runs in reverse order, so release always mirrors creation.
public final class Teardown: @unchecked Sendable {
    private var steps: [(name: String, undo: () throws -> Void)] = []

    public init() {}

    public func push(_ name: String, _ undo: @escaping () throws -> Void) {
        steps.append((name, undo))
    }

    public var isEmpty: Bool { steps.isEmpty }
    public var stepNames: [String] { steps.map(\.name) }

    /// Runs the steps newest first and stops at the first that fails, leaving it and the ones below it on
    /// the stack: what the failed object depends on must not be pulled from under it. Used by destroy, where
    /// the caller can report the error and keep the object alive.
    public func run() throws(TeardownError) {
        while let step = steps.last {
            do {
                try step.undo()
            } catch {
                throw TeardownError(step: step.name, underlying: error)
            }
            steps.removeLast()
        }
    }

    /// Best effort for failure paths: runs every step, newest first, even past failures, and returns what
    /// could not be undone.
    @discardableResult
    public func runAll() -> [TeardownError] {
        var failures: [TeardownError] = []
        while let step = steps.popLast() {
            do { try step.undo() } catch { failures.append(TeardownError(step: step.name, underlying: error)) }
        }
        return failures
    }
}

public struct TeardownError: Error, ErrnoCarrying, CustomStringConvertible {
    public let step: String
    public let underlying: any Error
    public var errno: Int32 { (underlying as? any ErrnoCarrying)?.errno ?? EIO }
    public var description: String { "undoing \(step): \(underlying)" }
}

