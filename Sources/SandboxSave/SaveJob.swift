import DiskImage
import Glibc
import LinuxBlock
import Logging
import Sandbox
import SandboxDiff
import Synchronization

/// `imgsandbox save`: writes a new image. The source image is copied sparsely to OUT.partial, its partitions
/// mounted (privately, under the run directory) and the sandbox's changes replayed into them, then checked,
/// fsynced and renamed to OUT. While the changes are read the sandbox's filesystems are frozen: its writes
/// wait. Any failure removes the partial file and every device and mount the job made; the source image and
/// the sandbox are never written. `progress` returning false (the client went away) cancels.
///
/// One method per phase, run in order by `run()`; a job runs once, on one thread.
public final class SaveJob {
    /// One Linux tree of the sandbox (the root, or a partition of its own) and its changes.
    struct Tree {
        var partition: Partition
        let filesystem: FilesystemType
        /// "/" for the root, else the partition's mount point.
        let point: String
        let changes: [Change]
        let source: ChangeSource
        /// nil for the root.
        let part: SandboxLinuxPart?
    }

    private static let serials = Atomic<UInt64>(0)

    private let sandbox: SandboxChanges
    private let request: SaveRequest
    private let output: String
    private let partial: String
    private let names: InstanceNames
    let logger: Logger
    private let progress: (SaveProgress) -> Bool
    private let started: ContinuousClock.Instant
    /// Names this job's loop devices and mounts apart from other saves'.
    private let serial: UInt64
    /// Released in this order on any failure: the freeze, then the mount and loop, then the partial file.
    private let freeze = Teardown(), mount = Teardown(), file = Teardown()
    /// OUT.partial was made by this job; `kept`: it became OUT, so the cleanup leaves it.
    private var made = false, kept = false

    private var fd: Int32 = -1
    private var sourceFD: Int32 = -1
    /// The sandbox's writes waited while its changes were read.
    private var frozen = true
    /// The root, as the output's table has it once grown.
    private var root: RootPartition
    private var trees: [Tree] = []
    private var rebuilt: [Int: ReadOnlyRebuild] = [:]
    /// The output's loop device over the root, while mounted.
    private var rootLoop: String?
    /// Paths left out (sockets): the root's (the result lists them), the other partitions' (logged only).
    private var skippedInRoot: [String] = []
    private var skippedElsewhere: [String] = []
    private var fatChanges = 0

    private init(sandbox: SandboxChanges, request: SaveRequest, output: String, names: InstanceNames, logger: Logger,
                 started: ContinuousClock.Instant, progress: @escaping (SaveProgress) -> Bool) {
        self.sandbox = sandbox
        self.request = request
        self.output = output
        partial = output + ".partial"
        self.names = names
        self.logger = logger
        self.started = started
        self.progress = progress
        root = sandbox.imageRoot
        serial = Self.serials.wrappingAdd(1, ordering: .relaxed).newValue
    }

    /// Saves sandbox `image`/`name` of `manager` as `request` says, the sandbox kept alive meanwhile (rmdir: EBUSY).
    public static func run(_ manager: SandboxManager, image: String, name: String, request: SaveRequest, logger: Logger,
                           progress: (SaveProgress) -> Bool) throws(SandboxError) -> SaveResult {
        let started = ContinuousClock.now
        do {
            let result = try manager.reading(image: image, name: name) { (sandbox) throws(SandboxError) in
                let output = try SaveTarget.validate(request, source: sandbox.imagePath, runDirectory: manager.names.runDirectory)
                // The job keeps `progress` only while it runs.
                return try withoutActuallyEscaping(progress) { (progress) throws(SandboxError) in
                    try SaveJob(sandbox: sandbox, request: request, output: output, names: manager.names, logger: logger,
                                started: started, progress: progress).run()
                }
            }
            logger.info("saved \(image)/\(name) to \(result.output): \(result.changes) changes, \(result.sizeBytes) bytes (\(result.allocatedBytes) allocated) in \(started.duration(to: .now))")
            return result
        } catch {
            logger.error("save \(image)/\(name) to \(request.output) failed: \(error)")
            throw error
        }
    }

    private func run() throws(SandboxError) -> SaveResult {
        defer { cleanUp() }
        try refuseSplitPartitions()
        try createOutput()
        try copyImage()
        freezeSandbox()
        try readChanges()
        // squashfs/erofs are made anew while frozen: their sizes are known before anything grows.
        try rebuildReadOnly()
        try growIfNeeded()
        try writeRebuilt()
        try replayLinux()
        try replayFAT()
        try thawSandbox()
        try flushOutput()
        try shrinkRoot()
        try checkRoot()
        return try commit()
    }

    private func cleanUp() {
        for stack in [freeze, mount, file] {
            for failure in stack.runAll() { logger.error("save cleanup: \(failure)") }
        }
        if made, !kept { unlink(partial) }
    }

    /// Copy, grow, shrink and replay address a partition as one range of the output: a logical volume in
    /// several ranges is refused before anything is written.
    private func refuseSplitPartitions() throws(SandboxError) {
        let partitions = [root.partition] + sandbox.linux.map(\.mount.partition) + sandbox.fats.map(\.mount.partition)
        for p in partitions {
            if let reason = p.notContiguousReason("save") { throw .unsupported(reason) }
        }
    }

    private func createOutput() throws(SandboxError) {
        fd = file.own(try SaveOutput.openPartial(partial, force: request.force, mode: request.mode), partial)
        made = true
    }

    private func copyImage() throws(SandboxError) {
        let path = sandbox.imagePath
        do throws(SystemError) {
            sourceFD = file.own(try FileDescriptor.open(path, O_RDONLY), path)
        } catch {
            throw .stepFailed(step: "open \(path)", underlying: error)
        }
        var info = stat()
        guard fstat(sourceFD, &info) == 0 else { throw .stepFailed(step: "save", underlying: SystemError("fstat", path, errno: errno)) }
        let size = UInt64(info.st_size)
        try step("copy \(path) to \(partial)") {
            try SparseCopy.copy(from: sourceFD, to: fd, size: size) { progress(SaveProgress(phase: "copy", doneBytes: $0, totalBytes: size)) }
        }
        // Written back before the freeze: attaching the writable loop device would otherwise wait for
        // it (1.0 s for a 2 GiB Pi image) with the sandbox's writes held.
        try step("flush the copy") {
            guard fdatasync(fd) == 0 else { throw SaveOutput.destinationFull(output) ?? SystemError("fdatasync", partial, errno: errno) }
        }
    }

    /// The sandbox's writes wait from here until the changes are copied: the output is one moment of it.
    private func freezeSandbox() {
        // Several btrfs subvolumes share one filesystem: each frozen once.
        var seen = Set<String>()
        for path in ([sandbox.root.writablePath] + sandbox.linux.map(\.source.writablePath)).filter({ seen.insert($0).inserted }) {
            do throws(SystemError) {
                try FilesystemControl.freeze(path)
                freeze.push("thaw \(path)") { try FilesystemControl.thaw(path) }
            } catch {
                frozen = false
                logger.notice("save: cannot freeze \(path) (\(error)); writes made during the save may be partly in the output")
            }
        }
    }

    private func readChanges() throws(SandboxError) {
        let rootChanges = try ChangeReader.changes(in: sandbox.root)
        trees = [Tree(partition: root.partition, filesystem: root.filesystem.type, point: "/", changes: rootChanges,
                      source: sandbox.root, part: nil)]
        for part in sandbox.linux {
            trees.append(Tree(partition: part.mount.partition, filesystem: part.mount.filesystem.type, point: part.mount.mountPoint,
                              changes: try ChangeReader.changes(in: part.source), source: part.source, part: part))
        }
        _ = progress(SaveProgress(phase: "changes", doneBytes: 0, totalBytes: UInt64(rootChanges.count)))
    }

    /// The output's partition table: the image's, or, when the changes of a partition (the root or another
    /// Linux one) need more room than the image's filesystem has free, with that partition grown (it must be
    /// the last: one that is not stops the save with ENOSPC before anything grows), the table read anew.
    private func rebuildReadOnly() throws(SandboxError) {
        rebuilt = try Self.rebuildReadOnly(trees, sourceFD: sourceFD, output: output, logger: logger)
    }

    /// The rebuilt filesystems over their partitions of the output, as its table has them (grown where they had to).
    private func writeRebuilt() throws(SandboxError) {
        try Self.writeRebuilt(rebuilt, partitions: trees.map(\.partition), into: fd)
    }

    private func growIfNeeded() throws(SandboxError) {
        let table = root.table
        var short: [(partition: Partition, filesystem: FilesystemType, name: String, bytes: UInt64)] = []
        for tree in trees {
            let name = "partition \(tree.partition.number) (\(tree.point))"
            if tree.filesystem.isReadOnly {  // made anew (or, unchanged, kept): only its new size counts
                let size = rebuilt[tree.partition.number]?.sizeBytes ?? 0
                // Grown, room after it too: OpenWrt's first boot puts its overlay behind its squashfs.
                if size > tree.partition.sizeBytes { short.append((tree.partition, tree.filesystem, name, size - tree.partition.sizeBytes + 16 << 20)) }
                continue
            }
            var fs = statvfs()
            guard statvfs(tree.source.pristineRoot, &fs) == 0 else {
                throw .stepFailed(step: "save", underlying: SystemError("statvfs", tree.source.pristineRoot, errno: errno))
            }
            let free = UInt64(fs.f_bfree) * UInt64(fs.f_frsize)
            let more = try step("estimate the room the changes of \(tree.point) need") {
                try PartitionGrow.shortfall(of: tree.changes, sandboxRoot: tree.source.sandboxRoot, pristineRoot: tree.source.pristineRoot,
                                            freeBytes: free)
            }
            if more > 0 { short.append((tree.partition, tree.filesystem, name, more)) }
        }
        guard !short.isEmpty else { return }
        // One that is not last cannot grow (ENOSPC): tried first, so the save stops before anything grows.
        let last = { (partition: Partition) in PartitionTableRewrite.isLast(partition, in: table) }
        for part in short.filter({ !last($0.partition) }) + short.filter({ last($0.partition) }) {
            try step("make room for the changes") {
                try PartitionGrow.grow(image: partial, fd: fd, partition: part.partition, filesystem: part.filesystem, name: part.name,
                                       table: table, by: part.bytes, loopLabel: names.saveLoopLabel(save: serial), scratch: names.runDirectory)
            }
            logger.notice("save: the changes needed \(part.bytes >> 20) MiB more than \(part.name) had free; it and the file grew")
        }
        let grown: PartitionTable
        do {
            grown = try PartitionTable.read(FileByteSource(path: partial))
        } catch {
            throw .stepFailed(step: "read the grown output's partition table", underlying: error)
        }
        for index in trees.indices {
            let number = trees[index].partition.number
            trees[index].partition = grown.partitions.first { $0.number == number } ?? trees[index].partition
        }
        root = RootPartition(partition: trees[0].partition, filesystem: root.filesystem, table: grown, subvolume: root.subvolume)
    }

    /// Every Linux tree's changes written into the output's copy of its partition (squashfs/erofs were made anew).
    private func replayLinux() throws(SandboxError) {
        if !root.filesystem.type.isReadOnly { skippedInRoot = try replayRoot(trees[0]) }
        for tree in trees.dropFirst() where !tree.filesystem.isReadOnly {
            // A btrfs subvolume of the root's partition (Fedora's /home) goes through the root's loop device: a
            // second one would be a second writer of the same blocks.
            let shared = tree.partition.number == root.partition.number ? rootLoop : nil
            skippedElsewhere += try replay(tree, device: shared)
        }
        let count = UInt64(trees[0].changes.count)
        _ = progress(SaveProgress(phase: "changes", doneBytes: count, totalBytes: count))
    }

    /// The root's changes written into the output's copy of it, mounted until `mount` runs (after the thaw:
    /// the output's flush need not hold the sandbox's writes); returns the paths left out (sockets).
    private func replayRoot(_ tree: Tree) throws(SandboxError) -> [String] {
        let partition = root.partition
        let mountPath = names.saveMount(save: serial)
        let loop = try step("attach \(partial) read-write") {
            try LoopDevice.attach(file: partial, offset: partition.startByte, sizeLimit: partition.sizeBytes,
                                  readOnly: false, autoclear: true, label: names.saveLoopLabel(save: serial))
        }
        mount.push("detach \(loop.path)") { try loop.detach() }
        if root.filesystem.type == .btrfs { try mountableBtrfs(loop.path, teardown: mount) }
        try step("create \(mountPath)") { try PrivateDirectory.create(mountPath) }
        mount.push("remove \(mountPath)") { try PrivateDirectory.remove(mountPath) }
        try step("mount \(loop.path) on \(mountPath)") {
            try Mount.mount(source: loop.path, target: mountPath, type: root.filesystem.type.rawValue, flags: [.nosuid, .nodev],
                            options: root.mountOptions.joined(separator: ","))
        }
        mount.push("unmount \(mountPath)") { try Mount.unmount(mountPath) }
        rootLoop = loop.path
        // In a closure: the replay's directory fds must be closed before the output is unmounted.
        return try step("write the changes") { () throws -> [String] in
            var replay = try ChangeReplay(sandboxRoot: tree.source.sandboxRoot, outputRoot: mountPath)
            try replay.apply(tree.changes)
            return replay.skipped
        }
    }

    /// A Linux partition's changes written into the output's copy of it, mounted for that alone; returns
    /// the paths left out (sockets). `device`: the output's loop device already over that partition (the
    /// root's, for a further btrfs subvolume).
    private func replay(_ tree: Tree, device: String?) throws(SandboxError) -> [String] {
        let (point, partition) = (tree.point, tree.partition)
        let teardown = Teardown()
        defer { for failure in teardown.runAll() { logger.error("save cleanup: \(failure)") } }
        let source: String
        if let device {
            source = device
        } else {
            let loop = try step("attach partition \(partition.number) of \(partial)") {
                try LoopDevice.attach(file: partial, offset: partition.startByte, sizeLimit: partition.sizeBytes,
                                      readOnly: false, autoclear: true, label: names.saveLoopLabel(save: serial))
            }
            teardown.push("detach \(loop.path)") { try loop.detach() }
            if tree.filesystem == .btrfs { try mountableBtrfs(loop.path, teardown: teardown) }
            source = loop.path
        }
        let mountPath = names.saveMount(save: serial) + "-p\(partition.number)"
        try step("create \(mountPath)") { try PrivateDirectory.create(mountPath) }
        teardown.push("remove \(mountPath)") { try PrivateDirectory.remove(mountPath) }
        try step("mount \(source) on \(mountPath)") {
            try Mount.mount(source: source, target: mountPath, type: tree.filesystem.rawValue, flags: [.nosuid, .nodev],
                            options: tree.part?.mount.subvolume?.mountOption ?? "")
        }
        teardown.push("unmount \(mountPath)") { try Mount.unmount(mountPath) }
        let skipped = try step("write the changes of \(point)") { () throws -> [String] in
            var replay = try ChangeReplay(sandboxRoot: tree.source.sandboxRoot, outputRoot: mountPath)
            try replay.apply(tree.changes)
            return replay.skipped.map { point + $0 }
        }
        _ = try? FilesystemControl.trim(mountPath)
        try step("flush the output's \(point)") { try FilesystemControl.sync(mountPath) }
        try step("release the output's \(point)") { try teardown.run() }
        return skipped
    }

    /// Gives the output's copy of a btrfs on `device` an fsid of its own until `teardown` runs (after its unmount),
    /// which writes the image's identity back: the image's copy is mounted (pristine/, diff's), and before Linux
    /// 6.7 btrfs refuses a second device with a mounted fsid (EEXIST). Done on every kernel: one path.
    private func mountableBtrfs(_ device: String, teardown: Teardown) throws(SandboxError) {
        let identity = try step("read the btrfs identity on \(device)") { try BtrfsIdentity.read(device: device) }
        teardown.push("give \(device) back the image's btrfs fsid") { try identity.write(device: device) }
        try step("give \(device) an fsid of its own while it is mounted (btrfstune -m)") {
            _ = try Command.run(["btrfstune", "-m", device])
        }
    }

    /// FAT partitions: the daemon serves them, so their changes are read and written through FATFS (the
    /// kernel here may have no vfat) while the sandbox is still frozen.
    private func replayFAT() throws(SandboxError) {
        for fat in sandbox.fats {
            let changes = try ChangeReader.fatChanges(fat, imagePath: sandbox.imagePath)
            if let damaged = changes.first(where: { $0.kind == .unreadable }) {
                throw .stepFailed(step: "save", underlying: SystemError(
                    "refused:", "\(damaged.path) is a corrupt FAT entry of the image (fsck.fat reports it), so it cannot be copied", errno: EIO))
            }
            fatChanges += changes.count
            try step("write the changes of \(fat.mount.mountPoint)") {
                try FATReplay.apply(changes, from: fat.volume, outputFD: fd, partition: fat.mount.partition, prefix: fat.mount.mountPoint)
            }
        }
    }

    private func thawSandbox() throws(SandboxError) {
        try step("thaw the sandbox") { try freeze.run() }
        for path in skippedInRoot + skippedElsewhere { logger.notice("save: \(path) is a socket, which an image cannot hold; left out") }
    }

    /// The root's mount flushed and released.
    private func flushOutput() throws(SandboxError) {
        if !root.filesystem.type.isReadOnly {
            let mountPath = names.saveMount(save: serial)
            // Blocks freed by the changes become holes in the output (the loop device punches them).
            _ = try? FilesystemControl.trim(mountPath)
            // The loop device writes the file behind ext4's back: a full destination shows up only as write
            // errors that syncfs reports (umount would not).
            try step("flush the output") {
                do throws(SystemError) { try FilesystemControl.sync(mountPath) } catch {
                    throw SaveOutput.destinationFull(output) ?? error
                }
            }
        }
        try step("release the output's mount") { try mount.run() }
    }

    private func shrinkRoot() throws(SandboxError) {
        guard request.shrink else { return }
        _ = progress(SaveProgress(phase: "shrink", doneBytes: 0, totalBytes: 1))
        let shrunk = try step("shrink the root partition") {
            try RootShrink.shrink(image: partial, fd: fd, root: root, loopLabel: names.saveLoopLabel(save: serial),
                                  scratch: names.runDirectory)
        }
        if shrunk == nil { logger.notice("save --shrink: the root is already no bigger than its content and margin") }
        _ = progress(SaveProgress(phase: "shrink", doneBytes: 1, totalBytes: 1))
    }

    /// Nothing is given the name OUT that e2fsck would not pass.
    private func checkRoot() throws(SandboxError) {
        try step("check the output's root filesystem") {
            try RootCheck.check(image: partial, partition: root, loopLabel: names.saveLoopLabel(save: serial))
        }
    }

    /// OUT.partial made durable and renamed to OUT.
    private func commit() throws(SandboxError) -> SaveResult {
        guard fsync(fd) == 0 else { throw .stepFailed(step: "save", underlying: SystemError("fsync", partial, errno: errno)) }
        guard rename(partial, output) == 0 else {
            throw .stepFailed(step: "save", underlying: SystemError("rename to \(output)", partial, errno: errno))
        }
        kept = true
        SaveOutput.syncDirectory(of: output)
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .stepFailed(step: "save", underlying: SystemError("fstat", output, errno: errno)) }
        return SaveResult(output: output, sizeBytes: UInt64(info.st_size), allocatedBytes: UInt64(info.st_blocks) * 512,
                          changes: trees.reduce(0) { $0 + $1.changes.count } + fatChanges, seconds: Self.seconds(started.duration(to: .now)),
                          skipped: skippedInRoot, writesWaited: frozen)
    }
}
