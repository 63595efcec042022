import DiskImage
import FATFS
import Glibc
import LinuxBlock
import SandboxDiff

/// A FAT partition of a live sandbox, served by the daemon from FATFS.
public struct SandboxFAT {
    public let mount: PartitionMount
    public let volume: FATVolume
}

/// A Linux partition of a live sandbox (a mount of its own, /home say): compared like the root, its
/// changes shown under its mount point.
public struct SandboxLinuxPart {
    public let mount: PartitionMount
    public let source: ChangeSource

    /// `change` of the partition's tree as a path of the sandbox's.
    public func shown(_ change: Change) -> Change {
        let point = Array(mount.mountPoint.utf8)
        let path = change.rawPath == [UInt8(ascii: "/")] ? point : point + change.rawPath
        return Change(rawPath: path, kind: change.kind, aspects: change.aspects)
    }
}

/// Where a live sandbox's changes are read from, for diff and save: the image file and root it was made of,
/// the root's change source, its other Linux partitions' and its FAT volumes. Valid only inside
/// `SandboxManager.reading`, which keeps the sandbox alive.
public struct SandboxChanges {
    /// The image file the sandbox was made of (a compressed image's cache file).
    public let imagePath: String
    /// The image's root partition (its btrfs subvolume too) as the sandbox was made of it.
    public let imageRoot: RootPartition
    public let root: ChangeSource
    public let linux: [SandboxLinuxPart]
    public let fats: [SandboxFAT]
}

/// Opens a live sandbox's change sources through the engine, and lists changes: overlay's upper layer, dm's
/// journal or whole trees compared, FAT volumes compared with the image's.
public struct ChangeReader: Sendable {
    let engine: any SandboxEngine

    /// Runs `body` on the sandbox's change sources with the sandbox kept alive; nil when it is torn down.
    func reading<T>(_ live: LiveSandbox, imagePath: String, imageRoot: RootPartition,
                    _ body: (SandboxChanges) throws(SandboxError) -> T) throws(SandboxError) -> T? {
        let fats = live.parts.compactMap { part -> SandboxFAT? in
            guard case .fat(let volume, _) = part.ref.content else { return nil }
            return SandboxFAT(mount: part.ref.mount, volume: volume)
        }
        // Inside `using`: the image's attachment (where dm keeps its read-only root) outlives the sandbox.
        return try live.access.using { () throws(SandboxError) -> T in
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
            return try body(SandboxChanges(imagePath: imagePath, imageRoot: imageRoot, root: source, linux: linux, fats: fats))
        }
    }

    /// The root's changes and every other partition's, sorted by path.
    public static func all(_ sandbox: SandboxChanges) throws(SandboxError) -> [Change] {
        var changes = try changes(in: sandbox.root)
        for part in sandbox.linux { changes += try Self.changes(in: part.source).map(part.shown) }
        for fat in sandbox.fats { changes += try fatChanges(fat, imagePath: sandbox.imagePath) }
        return changes.sorted { $0.rawPath.lexicographicallyPrecedes($1.rawPath) }
    }

    /// Compared with the partition as the image holds it, read through a volume of our own.
    public static func fatChanges(_ fat: SandboxFAT, imagePath: String) throws(SandboxError) -> [Change] {
        let fd = open(imagePath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .stepFailed(step: "open \(imagePath)", underlying: SystemError("open", imagePath, errno: errno)) }
        defer { close(fd) }
        let partition = fat.mount.partition
        if let reason = partition.notContiguousReason("compare \(fat.mount.mountPoint)") { throw .unsupported(reason) }
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

    /// One tree's changes: the upper layer's (overlay), the journal's paths (dm) or the whole trees compared.
    public static func changes(in source: ChangeSource) throws(SandboxError) -> [Change] {
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
}

extension DiffError: ErrnoCarrying {}
