import DiskImage
import LinuxBlock
import SandboxDiff
import Synchronization

/// Where a sandbox's changes can be read, for diff and save.
public struct ChangeSource: Sendable {
    /// The sandbox's tree: its hidden mount.
    public let sandboxRoot: String
    /// The image's tree as the image holds it (mounted read-only).
    public let pristineRoot: String
    /// overlay: the upper layer, which holds exactly what changed; nil: no change set in the filesystem.
    public let upperRoot: String?
    /// The filesystem that takes the sandbox's writes: frozen while a save reads the sandbox.
    public let writablePath: String
    /// dm: what the FUSE layer recorded of the sandbox's writes (the manager adds it); with neither this nor
    /// `upperRoot`, whole trees are compared.
    public var journal: ChangeJournal?

    public init(sandboxRoot: String, pristineRoot: String, upperRoot: String?, writablePath: String,
                journal: ChangeJournal? = nil) {
        self.sandboxRoot = sandboxRoot
        self.pristineRoot = pristineRoot
        self.upperRoot = upperRoot
        self.writablePath = writablePath
        self.journal = journal
    }
}

extension OverlayEngine {
    public func changeSource(of sandbox: any EngineAttachment, image: any EngineAttachment) -> ChangeSource? {
        if let part = sandbox as? SubvolumeAttachment { return part.changeSource }
        guard let sandbox = sandbox as? SandboxAttachment, let image = image as? ImageAttachment else { return nil }
        return ChangeSource(sandboxRoot: sandbox.mountPath, pristineRoot: image.lowerPath,
                            upperRoot: sandbox.upperMount + "/upper", writablePath: sandbox.upperMount)
    }
}

extension DeviceMapperEngine {
    /// A snapshot is blocks: its files' changes come from the FUSE layer's journal.
    public var needsChangeJournal: Bool { true }

    /// The sandbox's mount (frozen during a save: it is the snapshot's filesystem) and the image's root
    /// mounted read-only through a loop device of its own (the base dm device is held by the snapshots),
    /// made at the first diff or save and kept until the image is released.
    public func changeSource(of sandbox: any EngineAttachment, image: any EngineAttachment) throws -> ChangeSource? {
        if sandbox is OverlayEngine.SandboxAttachment { return readOnlyFilesystems.changeSource(of: sandbox, image: image) }
        guard let image = image as? ImageAttachment else { return nil }
        let pristine = try image.pristineRoot.withLock { (mounted: inout (path: String, loop: String)?) throws -> (path: String, loop: String) in
            if let mounted { return mounted }
            let made = try mountPristine(image)
            mounted = made
            return made
        }
        if let part = sandbox as? SubvolumeAttachment {
            let path = try pristineSubvolume(part, image: image, loop: pristine.loop)
            return ChangeSource(sandboxRoot: part.mountPath, pristineRoot: path, upperRoot: nil, writablePath: part.writablePath)
        }
        guard let sandbox = sandbox as? SandboxAttachment else { return nil }
        return ChangeSource(sandboxRoot: sandbox.mountPath, pristineRoot: pristine.path, upperRoot: nil, writablePath: sandbox.mountPath)
    }

    /// The subvolume as the image holds it: the pristine loop device mounted again with that subvolume.
    private func pristineSubvolume(_ part: SubvolumeAttachment, image: ImageAttachment, loop: String) throws -> String {
        try OverlayEngine.subvolumeMount(part.subvolume, of: loop, type: image.filesystem.type,
                                         beside: names.lowerMount(image: image.serial), in: image.pristineSubvolumes,
                                         teardown: image.teardown)
    }

    private func mountPristine(_ image: ImageAttachment) throws -> (path: String, loop: String) {
        let teardown = Teardown()
        do {
            let loop = try step("attach loop device") {
                try readOnlyLoops.acquire(file: image.path, partition: image.partition, label: names.loopLabel(image: image.name),
                                          teardown: teardown)
            }
            let target = names.lowerMount(image: image.serial)
            try step("create \(target)") { try PrivateDirectory.create(target) }
            teardown.push("remove \(target)") { try PrivateDirectory.remove(target) }
            let type = image.filesystem.type
            try step("mount \(loop) read-only on \(target)") {
                try Mount.mount(source: loop, target: target, type: type.rawValue, flags: [.rdonly, .nosuid, .nodev],
                                options: OverlayEngine.readOnlyOptions(type, image.subvolume.map { [$0.mountOption] } ?? []))
            }
            teardown.push("unmount \(target)") { try Mount.unmount(target) }
            image.teardown.push("release the pristine mount \(target)") {
                let failures = teardown.runAll()
                if let first = failures.first { throw first }
            }
            return (target, loop)
        } catch {
            teardown.runAll()
            throw error
        }
    }
}
