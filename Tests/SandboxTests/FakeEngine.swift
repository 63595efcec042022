import Glibc
import Sandbox
import Synchronization

/// An engine whose "kernel objects" are names in a set, with a failure injectable at any step.
final class FakeEngine: SandboxEngine {
    static let imageSteps = ["loop", "base"]
    static let sandboxSteps = ["zram", "snapshot", "mount", "grow"]

    let kind = "fake"
    private let state = Mutex(State())

    struct State {
        var live: Set<String> = []
        var failCreateAt: String?
        var failUndoOf: String?
        var imageAttachCount = 0
    }

    struct InjectedFailure: Error, ErrnoCarrying {
        let step: String
        var errno: Int32 { ENOSPC }
    }

    final class Attachment: EngineAttachment {
        let teardown = Teardown()
    }

    var liveObjects: Set<String> { state.withLock { $0.live } }
    var imageAttachCount: Int { state.withLock { $0.imageAttachCount } }
    func failCreate(at step: String?) { state.withLock { $0.failCreateAt = step } }
    func failUndo(of step: String?) { state.withLock { $0.failUndoOf = step } }

    private func make(_ step: String, object: String, in attachment: Attachment) throws {
        try state.withLock { state in
            if state.failCreateAt == step { throw InjectedFailure(step: step) }
            state.live.insert(object)
        }
        attachment.teardown.push(step) { [self] in
            try self.state.withLock { state in
                if state.failUndoOf == step { throw InjectedFailure(step: "undo " + step) }
                state.live.remove(object)
            }
        }
    }

    func attachImage(_ request: ImageRequest) throws -> any EngineAttachment {
        let attachment = Attachment()
        state.withLock { $0.imageAttachCount += 1 }
        do {
            for step in Self.imageSteps { try make(step, object: "\(step):\(request.name)", in: attachment) }
        } catch {
            attachment.teardown.runAll()
            throw error
        }
        return attachment
    }

    func createSandbox(_ request: SandboxRequest, on image: any EngineAttachment) throws -> any EngineAttachment {
        let attachment = Attachment()
        do {
            for step in Self.sandboxSteps {
                try make(step, object: "\(step):\(request.image)/\(request.name)", in: attachment)
            }
        } catch {
            attachment.teardown.runAll()
            throw error
        }
        return attachment
    }

    func usage(of sandbox: any EngineAttachment) -> SandboxUsage { SandboxUsage(cowUsedBytes: 1, cowTotalBytes: 2) }
}
