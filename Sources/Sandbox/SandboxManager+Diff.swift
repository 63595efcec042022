import SandboxDiff

extension SandboxManager {
    /// What the sandbox changed, sorted by path. The sandbox cannot be removed meanwhile (rmdir: EBUSY).
    public func diff(image: String, name: String) throws(SandboxError) -> [Change] {
        let started = ContinuousClock.now
        let changes = try usingSandbox(image: image, name: name) { (source: ChangeSource) throws(SandboxError) in
            try Self.changes(in: source)
        }
        logger.info("diff \(image)/\(name): \(changes.count) changes in \(started.duration(to: .now))")
        return changes
    }

    static func changes(in source: ChangeSource) throws(SandboxError) -> [Change] {
        do {
            if let upper = source.upperRoot {
                return try TreeDiff.overlay(merged: source.sandboxRoot, upper: upper, lower: source.pristineRoot)
            }
            return try TreeDiff.full(sandbox: source.sandboxRoot, pristine: source.pristineRoot)
        } catch {
            throw .stepFailed(step: "compare with the image", underlying: error)
        }
    }

    /// Runs `body` on the sandbox's change source with the sandbox kept alive.
    func usingSandbox<T>(image: String, name: String,
                         _ body: (ChangeSource) throws(SandboxError) -> T) throws(SandboxError) -> T {
        guard let live = live(image: image, name: name) else { throw .noSuchSandbox(image: image, sandbox: name) }
        guard let source = engine.changeSource(of: live.attachment, image: live.image) else {
            throw .unsupported("the \(engine.kind) engine cannot list a sandbox's changes yet")
        }
        guard let result = try live.access.using({ () throws(SandboxError) in try body(source) }) else {
            throw .noSuchSandbox(image: image, sandbox: name)
        }
        return result
    }
}

extension DiffError: ErrnoCarrying {}
