import DiskImage
import FATFS
import Glibc
import LinuxBlock
import SandboxDiff

/// A FAT partition of a live sandbox, served by the daemon from FATFS.
struct SandboxFAT {
    let mount: PartitionMount
    let volume: FATVolume
}

/// A Linux partition of a live sandbox (a mount of its own, /home say): compared like the root, its
/// changes shown under its mount point.
struct SandboxLinuxPart {
    let mount: PartitionMount
    let source: ChangeSource

    /// `change` of the partition's tree as a path of the sandbox's.
    func shown(_ change: Change) -> Change {
        let point = Array(mount.mountPoint.utf8)
        let path = change.rawPath == [UInt8(ascii: "/")] ? point : point + change.rawPath
        return Change(rawPath: path, kind: change.kind, aspects: change.aspects)
    }
}

extension SandboxManager {
    /// What the sandbox changed, sorted by path. The sandbox cannot be removed meanwhile (rmdir: EBUSY).
    public func diff(image: String, name: String) throws(SandboxError) -> [Change] {
        let started = ContinuousClock.now
        guard let imagePath = imagePath(image) else { throw .noSuchImage(image) }
        let changes = try usingSandbox(image: image, name: name) {
            (source: ChangeSource, fats: [SandboxFAT], linux: [SandboxLinuxPart]) throws(SandboxError) in
            try Self.changes(in: source, fats: fats, linux: linux, imagePath: imagePath)
        }
        logger.info("diff \(image)/\(name): \(changes.count) changes in \(started.duration(to: .now))")
        return changes
    }

    /// The root's changes and every other partition's, sorted by path.
    static func changes(in source: ChangeSource, fats: [SandboxFAT], linux: [SandboxLinuxPart],
                        imagePath: String) throws(SandboxError) -> [Change] {
        var changes = try changes(in: source)
        for part in linux { changes += try Self.changes(in: part.source).map(part.shown) }
        for fat in fats { changes += try fatChanges(fat, imagePath: imagePath) }
        return changes.sorted { $0.rawPath.lexicographicallyPrecedes($1.rawPath) }
    }

    /// Compared with the partition as the image holds it, read through a volume of our own.
    static func fatChanges(_ fat: SandboxFAT, imagePath: String) throws(SandboxError) -> [Change] {
        let fd = open(imagePath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .stepFailed(step: "open \(imagePath)", underlying: SystemError("open", imagePath, errno: errno)) }
        defer { close(fd) }
        let partition = fat.mount.partition
        do throws(FATError) {
            let pristine = try FATVolume(device: FileRegionDevice(fd: fd, offset: partition.startByte, size: partition.sizeBytes,
                                                                  writable: false), readOnly: true)
            var diff = FATDiff(sandbox: fat.volume, pristine: pristine, prefix: fat.mount.mountPoint)
            try diff.run()
            return diff.changes
        } catch {
            throw .stepFailed(step: "compare \(fat.mount.mountPoint) with the image", underlying: error)
        }
    }

    static func changes(in source: ChangeSource) throws(SandboxError) -> [Change] {
        do {
            if let upper = source.upperRoot {
                return try TreeDiff.overlay(merged: source.sandboxRoot, upper: upper, lower: source.pristineRoot)
            }
            if let journal = source.journal {
                return try TreeDiff.journal(sandbox: source.sandboxRoot, pristine: source.pristineRoot, paths: journal.snapshot())
            }
            return try TreeDiff.full(sandbox: source.sandboxRoot, pristine: source.pristineRoot)
        } catch {
            throw .stepFailed(step: "compare with the image", underlying: error)
        }
    }

    /// Runs `body` on the sandbox's change source with the sandbox kept alive.
    func usingSandbox<T>(image: String, name: String,
                         _ body: (ChangeSource, [SandboxFAT], [SandboxLinuxPart]) throws(SandboxError) -> T) throws(SandboxError) -> T {
        guard let live = live(image: image, name: name) else { throw .noSuchSandbox(image: image, sandbox: name) }
        let fats = live.parts.compactMap { part -> SandboxFAT? in
            guard case .fat(let volume, _) = part.ref.content else { return nil }
            return SandboxFAT(mount: part.ref.mount, volume: volume)
        }
        // Inside `using`: the image's attachment (where dm keeps its read-only root) outlives the sandbox.
        guard let result = try live.access.using({ () throws(SandboxError) -> T in
            guard var source = try step("mount the image's root read-only", {
                try engine.changeSource(of: live.attachment, image: live.image)
            }) else {
                throw .unsupported("the \(engine.kind) engine cannot list a sandbox's changes")
            }
            source.journal = live.ref.journal
            var linux: [SandboxLinuxPart] = []
            for part in live.parts {
                guard case .mounted = part.ref.content, let attachment = part.attachment, let image = part.image else { continue }
                guard var partSource = try step("mount partition \(part.ref.mount.partition.number) of the image read-only", {
                    try engine.changeSource(of: attachment, image: image)
                }) else { continue }
                partSource.journal = part.ref.journal
                linux.append(SandboxLinuxPart(mount: part.ref.mount, source: partSource))
            }
            return try body(source, fats, linux)
        }) else {
            throw .noSuchSandbox(image: image, sandbox: name)
        }
        return result
    }
}

extension DiffError: ErrnoCarrying {}
