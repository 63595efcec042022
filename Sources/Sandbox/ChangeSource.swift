/// Where a sandbox's changes can be read, for diff and save.
public struct ChangeSource: Sendable {
    /// The sandbox's tree: its hidden mount.
    public let sandboxRoot: String
    /// The image's tree as the image holds it (mounted read-only).
    public let pristineRoot: String
    /// overlay: the upper layer, which holds exactly what changed; nil: whole trees are compared.
    public let upperRoot: String?
    /// The filesystem that takes the sandbox's writes: frozen while a save reads the sandbox.
    public let writablePath: String

    public init(sandboxRoot: String, pristineRoot: String, upperRoot: String?, writablePath: String) {
        self.sandboxRoot = sandboxRoot
        self.pristineRoot = pristineRoot
        self.upperRoot = upperRoot
        self.writablePath = writablePath
    }
}

extension OverlayEngine {
    public func changeSource(of sandbox: any EngineAttachment, image: any EngineAttachment) -> ChangeSource? {
        guard let sandbox = sandbox as? SandboxAttachment, let image = image as? ImageAttachment else { return nil }
        return ChangeSource(sandboxRoot: sandbox.mountPath, pristineRoot: image.lowerPath,
                            upperRoot: sandbox.upperMount + "/upper", writablePath: sandbox.upperMount)
    }
}
