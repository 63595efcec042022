import CLinux
import DiskImage
import Glibc
import LinuxBlock
import SandboxDiff
import SandboxSave
import Synchronization

extension SandboxManager {
    private static let saveSerial = Atomic<UInt64>(0)

    /// Writes a new image: the source image copied sparsely to OUT.partial, its root partition mounted
    /// (privately, under the run directory) and the sandbox's changes replayed into it, then fsynced and
    /// renamed to OUT. While the changes are read the sandbox's filesystem is frozen: its writes wait.
    /// Any failure removes the partial file and every device and mount it made; the source image and
    /// the sandbox are never written. `progress` returning false (the client went away) cancels.
    public func save(image: String, name: String, request: SaveRequest,
                     progress: (SaveProgress) -> Bool) throws(SandboxError) -> SaveResult {
        let started = ContinuousClock.now
        do {
            let result = try reading(image: image, name: name) { (sandbox) throws(SandboxError) in
                let path = try SaveTarget.validate(request, source: sandbox.imagePath, runDirectory: names.runDirectory)
                return try writeImage(source: sandbox.root, fats: sandbox.fats, linux: sandbox.linux, sourcePath: sandbox.imagePath,
                                      root: sandbox.imageRoot, output: path, request: request, started: started, progress: progress)
            }
            logger.info("saved \(image)/\(name) to \(result.output): \(result.changes) changes, \(result.sizeBytes) bytes (\(result.allocatedBytes) allocated) in \(started.duration(to: .now))")
            return result
        } catch {
            logger.error("save \(image)/\(name) to \(request.output) failed: \(error)")
            throw error
        }
    }

    private func writeImage(source: ChangeSource, fats: [SandboxFAT], linux: [SandboxLinuxPart], sourcePath: String, root: RootPartition, output: String,
                            request: SaveRequest, started: ContinuousClock.Instant,
                            progress: (SaveProgress) -> Bool) throws(SandboxError) -> SaveResult {
        // Released in this order on any failure: the freeze, then the mount and loop, then the partial file.
        let file = Teardown(), mount = Teardown(), freeze = Teardown()
        defer {
            for stack in [freeze, mount, file] {
                for failure in stack.runAll() { logger.error("save cleanup: \(failure)") }
            }
        }
        let partial = output + ".partial"
        let fd = try openPartial(partial, force: request.force, mode: request.mode)
        let kept = Mutex(false)
        file.push("remove \(partial)") { if !kept.withLock({ $0 }) { unlink(partial) } }
        file.push("close \(partial)") { close(fd) }

        let sourceFD = try step("open \(sourcePath)") { try systemCall("open", sourcePath) { open(sourcePath, O_RDONLY | O_CLOEXEC) } }
        defer { close(sourceFD) }
        var info = stat()
        guard fstat(sourceFD, &info) == 0 else { throw .stepFailed(step: "save", underlying: SystemError("fstat", sourcePath, errno: errno)) }
        let size = UInt64(info.st_size)
        try step("copy \(sourcePath) to \(partial)") {
            try SparseCopy.copy(from: sourceFD, to: fd, size: size) { progress(SaveProgress(phase: "copy", doneBytes: $0, totalBytes: size)) }
        }
        // Written back before the freeze: attaching the writable loop device would otherwise wait for
        // it (1.0 s for a 2 GiB Pi image) with the sandbox's writes held.
        try step("flush the copy") {
            guard fdatasync(fd) == 0 else { throw Self.destinationFull(output) ?? SystemError("fdatasync", partial, errno: errno) }
        }

        // The sandbox's writes wait from here until the changes are copied: the output is one moment of it.
        var frozen = true
        // Several btrfs subvolumes share one filesystem: each frozen once.
        var seen = Set<String>()
        for path in ([source.writablePath] + linux.map(\.source.writablePath)).filter({ seen.insert($0).inserted }) {
            do throws(SystemError) {
                try FilesystemControl.freeze(path)
                freeze.push("thaw \(path)") { try FilesystemControl.thaw(path) }
            } catch {
                frozen = false
                logger.notice("save: cannot freeze \(path) (\(error)); writes made during the save may be partly in the output")
            }
        }
        let changes = try ChangeReader.changes(in: source)
        var partChanges: [[Change]] = []
        for part in linux { partChanges.append(try ChangeReader.changes(in: part.source)) }
        _ = progress(SaveProgress(phase: "changes", doneBytes: 0, totalBytes: UInt64(changes.count)))

        let serial = Self.saveSerial.wrappingAdd(1, ordering: .relaxed).newValue
        let written = [(root.partition, root.filesystem.type, "/", changes, source)]
            + zip(linux, partChanges).map { ($0.mount.partition, $0.mount.filesystem.type, $0.mount.mountPoint, $1, $0.source) }
        // squashfs/erofs are made anew while frozen: their sizes are known before anything grows.
        let rebuilt = try rebuildReadOnly(written, sourceFD: sourceFD, output: output)
        // Changes that do not fit a partition: the last one and the file grow first (a table read anew).
        let table = try growIfNeeded(written, rebuilt: rebuilt, table: root.table, partial: partial, fd: fd, serial: serial)
        let grown = { (old: Partition) in table.partitions.first { $0.number == old.number } ?? old }
        let root = RootPartition(partition: grown(root.partition), filesystem: root.filesystem, table: table, subvolume: root.subvolume)
        try writeRebuilt(rebuilt, partitions: [root.partition] + linux.map { grown($0.mount.partition) }, into: fd)
        let mountPath = names.saveMount(save: serial)
        let (skipped, rootLoop) = root.filesystem.type.isReadOnly ? ([], nil) : try replayRoot(changes, from: source, into: root,
                                                                                                 of: partial, at: mountPath, serial: serial, mount: mount)
        var skippedElsewhere: [String] = []
        for (part, changes) in zip(linux, partChanges) where !part.mount.filesystem.type.isReadOnly {
            // A btrfs subvolume of the root's partition (Fedora's /home) goes through the root's loop device: a
            // second one would be a second writer of the same blocks.
            let shared = part.mount.partition.number == root.partition.number ? rootLoop : nil
            skippedElsewhere += try replay(changes, of: part, partition: grown(part.mount.partition), into: partial, serial: serial,
                                           device: shared)
        }
        _ = progress(SaveProgress(phase: "changes", doneBytes: UInt64(changes.count), totalBytes: UInt64(changes.count)))
        // FAT partitions: the daemon serves them, so their changes are read and written through FATFS
        // (the kernel here may have no vfat) while the root is still frozen.
        var fatChanges = 0
        for fat in fats {
            let changes = try ChangeReader.fatChanges(fat, imagePath: sourcePath)
            if let damaged = changes.first(where: { $0.kind == .unreadable }) {
                throw .stepFailed(step: "save", underlying: SystemError(
                    "refused:", "\(damaged.path) is a corrupt FAT entry of the image (fsck.fat reports it), so it cannot be copied", errno: EIO))
            }
            fatChanges += changes.count
            try step("write the changes of \(fat.mount.mountPoint)") {
                try FATReplay.apply(changes, from: fat.volume, outputFD: fd, partition: fat.mount.partition, prefix: fat.mount.mountPoint)
            }
        }
        try step("thaw the sandbox") { try freeze.run() }
        for skipped in skipped + skippedElsewhere { logger.notice("save: \(skipped) is a socket, which an image cannot hold; left out") }

        if !root.filesystem.type.isReadOnly {
            // Blocks freed by the changes become holes in the output (the loop device punches them).
            _ = try? FilesystemControl.trim(mountPath)
            // The loop device writes the file behind ext4's back: a full destination shows up only as write
            // errors that syncfs reports (umount would not).
            try step("flush the output") {
                do throws(SystemError) { try FilesystemControl.sync(mountPath) } catch {
                    throw Self.destinationFull(output) ?? error
                }
            }
        }
        try step("release the output's mount") { try mount.run() }
        if request.shrink {
            _ = progress(SaveProgress(phase: "shrink", doneBytes: 0, totalBytes: 1))
            let shrunk = try step("shrink the root partition") {
                try RootShrink.shrink(image: partial, fd: fd, root: root, loopLabel: names.saveLoopLabel(save: serial),
                                      scratch: names.runDirectory)
            }
            if shrunk == nil { logger.notice("save --shrink: the root is already no bigger than its content and margin") }
            _ = progress(SaveProgress(phase: "shrink", doneBytes: 1, totalBytes: 1))
        }
        // Nothing is given the name OUT that e2fsck would not pass.
        try step("check the output's root filesystem") {
            try RootCheck.check(image: partial, partition: root, loopLabel: names.saveLoopLabel(save: serial))
        }
        guard fsync(fd) == 0 else { throw .stepFailed(step: "save", underlying: SystemError("fsync", partial, errno: errno)) }
        guard rename(partial, output) == 0 else {
            throw .stepFailed(step: "save", underlying: SystemError("rename to \(output)", partial, errno: errno))
        }
        kept.withLock { $0 = true }
        Self.syncDirectory(of: output)
        guard fstat(fd, &info) == 0 else { throw .stepFailed(step: "save", underlying: SystemError("fstat", output, errno: errno)) }
        return SaveResult(output: output, sizeBytes: UInt64(info.st_size), allocatedBytes: UInt64(info.st_blocks) * 512,
                          changes: changes.count + partChanges.reduce(0) { $0 + $1.count } + fatChanges, seconds: Self.seconds(started.duration(to: .now)),
                          skipped: skipped, writesWaited: frozen)
    }

    /// The root's changes written into the output's copy of it, mounted at `mountPath` until `mount` runs (after
    /// the thaw: the output's flush need not hold the sandbox's writes); returns the paths left out (sockets).
    private func replayRoot(_ changes: [Change], from source: ChangeSource, into root: RootPartition, of partial: String,
                            at mountPath: String, serial: UInt64, mount: Teardown) throws(SandboxError) -> ([String], String?) {
        let partition = root.partition
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
        // In a closure: the replay's directory fds must be closed before the output is unmounted.
        let skipped = try step("write the changes") { () throws -> [String] in
            var replay = try ChangeReplay(sandboxRoot: source.sandboxRoot, outputRoot: mountPath)
            try replay.apply(changes)
            return replay.skipped
        }
        return (skipped, loop.path)
    }

    /// A Linux partition's changes written into the output's copy of it, mounted for that alone; returns
    /// the paths left out (sockets).
    /// `device`: the output's loop device already over that partition (the root's, for a further btrfs subvolume).
    private func replay(_ changes: [Change], of part: SandboxLinuxPart, partition: Partition, into partial: String,
                        serial: UInt64, device: String?) throws(SandboxError) -> [String] {
        let point = part.mount.mountPoint
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
            if part.mount.filesystem.type == .btrfs { try mountableBtrfs(loop.path, teardown: teardown) }
            source = loop.path
        }
        let mountPath = names.saveMount(save: serial) + "-p\(partition.number)"
        try step("create \(mountPath)") { try PrivateDirectory.create(mountPath) }
        teardown.push("remove \(mountPath)") { try PrivateDirectory.remove(mountPath) }
        try step("mount \(source) on \(mountPath)") {
            try Mount.mount(source: source, target: mountPath, type: part.mount.filesystem.type.rawValue, flags: [.nosuid, .nodev],
                            options: part.mount.subvolume?.mountOption ?? "")
        }
        teardown.push("unmount \(mountPath)") { try Mount.unmount(mountPath) }
        let skipped = try step("write the changes of \(point)") { () throws -> [String] in
            var replay = try ChangeReplay(sandboxRoot: part.source.sandboxRoot, outputRoot: mountPath)
            try replay.apply(changes)
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

    /// The output's partition table: the image's, or, when the changes of a partition (the root or another
    /// Linux one) need more room than the image's filesystem has free, with that partition grown (it must be
    /// the last: one that is not stops the save with ENOSPC before anything grows).
    private func growIfNeeded(_ parts: [(Partition, FilesystemType, String, [Change], ChangeSource)], rebuilt: [Int: ReadOnlyRebuild],
                              table: PartitionTable, partial: String, fd: Int32, serial: UInt64) throws(SandboxError) -> PartitionTable {
        var short: [(partition: Partition, filesystem: FilesystemType, name: String, bytes: UInt64)] = []
        for (partition, filesystem, point, changes, source) in parts {
            if filesystem.isReadOnly {  // made anew (or, unchanged, kept): only its new size counts
                let size = rebuilt[partition.number]?.sizeBytes ?? 0
                // Grown, room after it too: OpenWrt's first boot puts its overlay behind its squashfs.
                if size > partition.sizeBytes {
                    short.append((partition, filesystem, "partition \(partition.number) (\(point))", size - partition.sizeBytes + 16 << 20))
                }
                continue
            }
            var fs = statvfs()
            guard statvfs(source.pristineRoot, &fs) == 0 else {
                throw .stepFailed(step: "save", underlying: SystemError("statvfs", source.pristineRoot, errno: errno))
            }
            let free = UInt64(fs.f_bfree) * UInt64(fs.f_frsize)
            let more = try step("estimate the room the changes of \(point) need") {
                try PartitionGrow.shortfall(of: changes, sandboxRoot: source.sandboxRoot, pristineRoot: source.pristineRoot, freeBytes: free)
            }
            if more > 0 { short.append((partition, filesystem, "partition \(partition.number) (\(point))", more)) }
        }
        // One that is not last cannot grow (ENOSPC): tried first, so the save stops before anything grows.
        let last = { (partition: Partition) in PartitionTableRewrite.isLast(partition, in: table) }
        for part in short.filter({ !last($0.partition) }) + short.filter({ last($0.partition) }) {
            try step("make room for the changes") {
                try PartitionGrow.grow(image: partial, fd: fd, partition: part.partition, filesystem: part.filesystem, name: part.name,
                                       table: table, by: part.bytes, loopLabel: names.saveLoopLabel(save: serial), scratch: names.runDirectory)
            }
            logger.notice("save: the changes needed \(part.bytes >> 20) MiB more than \(part.name) had free; it and the file grew")
        }
        guard !short.isEmpty else { return table }
        do {
            return try PartitionTable.read(FileByteSource(path: partial))
        } catch {
            throw .stepFailed(step: "read the grown output's partition table", underlying: error)
        }
    }
}

extension SaveError: ErrnoCarrying {}
