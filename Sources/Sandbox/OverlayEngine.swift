import CLinux
import DiskImage
import Glibc
import LinuxBlock
import Synchronization

/// For kernels without device-mapper: per image the root partition through a read-only loop device,
/// mounted read-only once; per sandbox an ext4 upper on a fresh zram device (a size-limited tmpfs
/// where there is no zram) and an overlayfs of the two on the hidden path.
public struct OverlayEngine: SandboxEngine {
    public let kind = "overlay"
    /// Names the loop devices; its run directory holds the lower and upper mounts.
    private let names: InstanceNames
    private let zram: Zram
    private let allocator: ZramAllocator
    public let readOnlyLoops: ReadOnlyLoops

    /// `zramLedger`: where the zram devices it adds are recorded for a sweep after a crash (nil: nowhere).
    /// `deviceMapper`: the dm engine's, which lets its read-only views join a partition in several ranges.
    public init(names: InstanceNames, zram: Zram = Zram(), zramLedger: String? = nil, deviceMapper: DeviceMapper? = nil) {
        readOnlyLoops = ReadOnlyLoops(deviceMapper: deviceMapper, names: names)
        self.names = names
        self.zram = zram
        self.allocator = ZramAllocator(zram: zram, ledger: zramLedger)
    }

    /// "zram" or, where the kernel has none, "tmpfs".
    public var cowStore: String { zram.isAvailable ? "zram" : "tmpfs" }

    final class ImageAttachment: EngineAttachment {
        let teardown: Teardown
        let lowerPath: String
        /// What the read-only lower uses: overlayfs reports only the upper.
        let lowerUse: BaseUse
        /// The read-only loop device under the lower, and what mounts it: a btrfs's other subvolumes are
        /// mounted from it too (another device with the same fsid would need Linux 6.7's temp-fsid).
        let loopPath: String
        let type: FilesystemType
        /// Those subvolumes' lower mounts, by mount option; made at first need, released with the image.
        let subvolumeLowers = Mutex<[String: String]>([:])
        init(teardown: Teardown, lowerPath: String, lowerUse: BaseUse, loopPath: String, type: FilesystemType) {
            self.teardown = teardown
            self.lowerPath = lowerPath
            self.lowerUse = lowerUse
            self.loopPath = loopPath
            self.type = type
        }
    }

    final class SandboxAttachment: EngineAttachment {
        let teardown: Teardown
        let zramID: Int?
        let upperMount: String
        let mountPath: String
        let baseUse: BaseUse
        init(teardown: Teardown, zramID: Int?, upperMount: String, mountPath: String, baseUse: BaseUse) {
            self.teardown = teardown
            self.zramID = zramID
            self.upperMount = upperMount
            self.mountPath = mountPath
            self.baseUse = baseUse
        }
    }

    public func attachImage(_ request: ImageRequest) throws -> any EngineAttachment {
        let teardown = Teardown()
        return try building(teardown) {
            let partition = request.root.partition
            let loop = try step("attach loop device") {
                try readOnlyLoops.acquire(file: request.path, partition: partition, label: names.loopLabel(image: request.name),
                                          teardown: teardown)
            }
            let lowerPath = names.lowerMount(image: request.serial)
            try step("create \(lowerPath)") { try PrivateDirectory.create(lowerPath) }
            teardown.push("remove \(lowerPath)") { try PrivateDirectory.remove(lowerPath) }
            let type = request.root.filesystem.type
            try step("mount \(loop) read-only on \(lowerPath)") {
                try Mount.mount(source: loop, target: lowerPath, type: type.rawValue, flags: [.rdonly, .nosuid, .nodev],
                                options: Self.readOnlyOptions(type, request.root.mountOptions))
            }
            teardown.push("unmount \(lowerPath)") { try Mount.unmountNamingHolders(lowerPath) }
            var lower = statvfs()
            _ = try step("statvfs \(lowerPath)") { try systemCall("statvfs", lowerPath) { statvfs(lowerPath, &lower) } }
            let lowerUse = BaseUse(bytes: UInt64(lower.f_blocks - lower.f_bfree) * UInt64(lower.f_frsize),
                                   inodes: UInt64(lower.f_files - lower.f_ffree))
            return ImageAttachment(teardown: teardown, lowerPath: lowerPath, lowerUse: lowerUse, loopPath: loop, type: type)
        }
    }

    /// A read-only mount's options: no journal replay, plus `extra` (a btrfs subvolume).
    static func readOnlyOptions(_ type: FilesystemType, _ extra: [String]) -> String {
        ([noReplayOption(type)].filter { !$0.isEmpty } + extra).joined(separator: ",")
    }

    /// The subvolume's lower: another read-only mount of the image's loop device, kept with the image.
    private func subvolumeLower(_ subvolume: BtrfsSubvolume?, image: ImageAttachment) throws -> String {
        try Self.subvolumeMount(subvolume, of: image.loopPath, type: image.type, beside: image.lowerPath,
                                in: image.subvolumeLowers, teardown: image.teardown)
    }

    /// `loop` mounted read-only again with `subvolume`'s option, on BASE-svN: once per subvolume (`mounts`,
    /// by mount option), undone by the image's `teardown`. btrfs's other subvolumes come from one device
    /// (another device with the same fsid would need Linux 6.7's temp-fsid).
    static func subvolumeMount(_ subvolume: BtrfsSubvolume?, of loop: String, type: FilesystemType, beside base: String,
                               in mounts: borrowing Mutex<[String: String]>, teardown: Teardown) throws -> String {
        let key = subvolume?.mountOption ?? ""
        return try mounts.withLock { (mounts: inout [String: String]) throws -> String in
            if let path = mounts[key] { return path }
            let path = "\(base)-sv\(mounts.count + 1)"
            try step("create \(path)") { try PrivateDirectory.create(path) }
            do {
                try step("mount \(loop) read-only on \(path)") {
                    try Mount.mount(source: loop, target: path, type: type.rawValue, flags: [.rdonly, .nosuid, .nodev],
                                    options: readOnlyOptions(type, subvolume.map { [$0.mountOption] } ?? []))
                }
            } catch {
                try? PrivateDirectory.remove(path)
                throw error
            }
            teardown.push("remove \(path)") { try PrivateDirectory.remove(path) }
            teardown.push("unmount \(path)") { try Mount.unmountNamingHolders(path) }
            mounts[key] = path
            return path
        }
    }

    /// An overlay of the subvolume's lower with an upper directory of its own in the sandbox's store.
    public func mountSubvolume(_ subvolume: BtrfsSubvolume?, of sandbox: any EngineAttachment, image: any EngineAttachment,
                               at mountPath: String) throws -> any EngineAttachment {
        guard let sandbox = sandbox as? SandboxAttachment, let image = image as? ImageAttachment else {
            preconditionFailure("attachment of another engine")
        }
        let lower = try subvolumeLower(subvolume, image: image)
        let teardown = Teardown()
        return try building(teardown) {
            let area = "\(sandbox.upperMount)/\(lower.split(separator: "/").last!)"
            let upper = area + "/upper", work = area + "/work"
            try step("prepare \(upper)") {
                try Self.makeDirectory(area, like: nil)
                try Self.makeDirectory(upper, like: lower)
                try Self.makeDirectory(work, like: nil)
            }
            let options = "lowerdir=\(lower),upperdir=\(upper),workdir=\(work),index=on,nfs_export=on"
            teardown.pushRemovalOfMountPoint(mountPath)
            try step("mount overlay on \(mountPath)") {
                try Mount.mount(source: InstanceNames.mountSource, target: mountPath, type: "overlay",
                                flags: [.nosuid, .nodev], options: options)
            }
            teardown.push("unmount \(mountPath)") { try Mount.unmountNamingHolders(mountPath) }
            return SubvolumeAttachment(teardown: teardown, owner: sandbox, subvolume: subvolume, mountPath: mountPath, pristineRoot: lower,
                                       upperRoot: upper, writablePath: sandbox.upperMount)
        }
    }

    /// Mount options that keep a dirty journal in the image from being replayed (or failing the mount).
    static func noReplayOption(_ type: FilesystemType) -> String {
        switch type {
        case .ext3, .ext4: "noload"
        case .xfs: "norecovery"
        case .btrfs: "rescue=nologreplay"
        default: ""
        }
    }

    public func createSandbox(_ request: SandboxRequest, on image: any EngineAttachment) throws -> any EngineAttachment {
        guard let image = image as? ImageAttachment else { preconditionFailure("attachment of another engine") }
        let teardown = Teardown()
        return try building(teardown) {
            let upperMount = names.upperMount(sandbox: request.serial)
            let zramID = try makeUpper(at: upperMount, size: request.settings.cowSize, teardown: teardown)
            let upper = upperMount + "/upper", work = upperMount + "/work"
            try step("prepare \(upper)") {
                try Self.makeDirectory(upper, like: image.lowerPath)
                try Self.makeDirectory(work, like: nil)
            }
            // index + nfs_export give stable file handles, which the FUSE layer identifies inodes by.
            let options = "lowerdir=\(image.lowerPath),upperdir=\(upper),workdir=\(work),index=on,nfs_export=on"
            teardown.pushRemovalOfMountPoint(request.mountPath)
            try step("mount overlay on \(request.mountPath)") {
                try Mount.mount(source: InstanceNames.mountSource, target: request.mountPath, type: "overlay",
                                flags: [.nosuid, .nodev], options: options)
            }
            teardown.push("unmount \(request.mountPath)") { try Mount.unmountNamingHolders(request.mountPath) }
            return SandboxAttachment(teardown: teardown, zramID: zramID, upperMount: upperMount, mountPath: request.mountPath,
                                     baseUse: image.lowerUse)
        }
    }

    /// zram where the kernel has it, else an unlinked sparse file in the work directory (the run directory:
    /// tmpfs on most systems).
    public func makeBlockStore(bytes: UInt64, teardown: Teardown) throws -> Int32 {
        if zram.isAvailable { return try allocator.blockStore(bytes: bytes, teardown: teardown) }
        var template = Array("\(names.runDirectory)/blockstore.XXXXXX".utf8CString)
        let fd = FileDescriptor(adopting: try systemCall("mkstemp", names.runDirectory) {
            template.withUnsafeMutableBufferPointer { clinux_mkstemp_cloexec($0.baseAddress!) }
        })
        unlink(template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        return teardown.own(fd, "block store")
    }

    /// Mounts the COW store on `path`: ext4 on a new zram device, else a tmpfs. Returns the zram id.
    private func makeUpper(at path: String, size: UInt64, teardown: Teardown) throws -> Int? {
        guard zram.isAvailable else {
            try makeMountPoint(path, teardown)
            try step("mount tmpfs on \(path)") {
                try Mount.mount(source: InstanceNames.mountSource, target: path, type: "tmpfs", flags: [.nosuid, .nodev],
                                options: "size=\(size),mode=0700")
            }
            teardown.push("unmount \(path)") { try Mount.unmountNamingHolders(path) }
            return nil
        }
        let id = try allocator.add(bytes: size)
        teardown.push("remove zram\(id)") { try allocator.release(id) }
        let device = zram.devicePath(id)
        // ext4's default 5 % of reserved blocks: root's share of the store, which other users' writes leave alone
        // (the FUSE layer enforces it: see SandboxFS RootShare). A small journal all the same: without
        // one, ext4 skips every inode freed in the last 30 s when it allocates (ialloc.c, recently_deleted), so
        // creating files after deleting many is quadratic (10,000 creates: 0.3 s, then 1-5 s; with it 0.3 s).
        // A fresh zram device reads as zeros, so the journal needs no zeroing either.
        let journal = size >= 64 << 20 ? ["-J", "size=4"] : []
        try step("mkfs.ext4 \(device)") {
            _ = try Command.run(["mkfs.ext4", "-q", "-F", "-m", "\(Self.rootSharePercent)"] + journal + ["-E", "nodiscard,lazy_journal_init=1", device])
        }
        try makeMountPoint(path, teardown)
        try step("mount \(device) on \(path)") {
            try Mount.mount(source: device, target: path, type: "ext4", flags: [.nosuid, .nodev])
        }
        teardown.push("unmount \(path)") { try Mount.unmountNamingHolders(path) }
        return id
    }

    /// The upper's mount point, made after its device and removed right after its unmount (before the device).
    private func makeMountPoint(_ path: String, _ teardown: Teardown) throws(SandboxError) {
        try step("create \(path)") { try PrivateDirectory.create(path) }
        teardown.pushRemovalOfMountPoint(path)
    }

    /// The percentage of the upper store kept for root (ext4's reserved blocks; its default).
    public static let rootSharePercent = 5

    /// What root may still write to an upper: its free space less what ext4 keeps from everyone (2 % of the
    /// blocks, at most 4096: ext4_calculate_resv_clusters). A tmpfs upper has neither (free = available).
    static func rootAvailable(_ upper: (blockSize: UInt64, totalBytes: UInt64, freeBytes: UInt64, availableBytes: UInt64)) -> UInt64 {
        guard upper.freeBytes > upper.availableBytes else { return upper.availableBytes }
        let kept = min(upper.totalBytes / max(upper.blockSize, 1) / 50, 4096) * upper.blockSize
        return upper.freeBytes - min(upper.freeBytes, kept)
    }

    /// Creates a directory with the mode and owner of `template` (the lower root), so the merged root
    /// looks like the image's.
    private static func makeDirectory(_ path: String, like template: String?) throws(SystemError) {
        var info = stat()
        if let template {
            guard lstat(template, &info) == 0 else { throw SystemError("lstat", template, errno: errno) }
        } else {
            info.st_mode = 0o700
        }
        guard mkdir(path, info.st_mode & 0o7777) == 0 else { throw SystemError("mkdir", path, errno: errno) }
        guard chmod(path, info.st_mode & 0o7777) == 0 else { throw SystemError("chmod", path, errno: errno) }
        if template != nil, chown(path, info.st_uid, info.st_gid) != 0 { throw SystemError("chown", path, errno: errno) }
        // The merged root shows the upper's times: the image's, so a fresh sandbox differs in nothing.
        var times = [info.st_atim, info.st_mtim]
        if template != nil, utimensat(AT_FDCWD, path, &times, 0) != 0 { throw SystemError("utimensat", path, errno: errno) }
    }

    /// ext4 answers ENOSPC while a little space is still free (reservations for metadata and delayed
    /// allocation; 650 KiB of a 64 MiB upper, seen): an upper with less than 1/32 of its size (at most
    /// 8 MiB, at least 16 blocks) available counts as full.
    static func fullMargin(totalBytes: UInt64, blockSize: UInt64) -> UInt64 {
        max(blockSize * 16, min(totalBytes / 32, 8 << 20))
    }

    public func usage(of sandbox: any EngineAttachment) -> SandboxUsage {
        if let part = sandbox as? SubvolumeAttachment { return usage(of: part.owner) }
        guard let sandbox = sandbox as? SandboxAttachment else { return SandboxUsage() }
        var usage = cowUsage(of: sandbox)
        if let id = sandbox.zramID { usage.fillZram(zram, ids: [id]) }
        usage.fillFilesystem(sandbox.mountPath)
        if usage.filesystemSizeBytes > 0 { usage.filesystemSizeBytes += sandbox.baseUse.bytes }
        return usage
    }

    public func cowUsage(of sandbox: any EngineAttachment) -> SandboxUsage {
        if let part = sandbox as? SubvolumeAttachment { return cowUsage(of: part.owner) }
        guard let sandbox = sandbox as? SandboxAttachment else { return SandboxUsage() }
        var usage = SandboxUsage(cowStore: sandbox.zramID == nil ? "tmpfs" : "zram")
        if let upper = try? FilesystemUsage.of(sandbox.upperMount) {
            usage.cowTotalBytes = upper.totalBytes
            usage.cowUsedBytes = upper.totalBytes - min(upper.totalBytes, upper.freeBytes)
            // A full upper refuses every write that needs new blocks: that is overflow for this engine. Root's
            // share counts (other users stop at its edge; root's writes fail only past it).
            if Self.rootAvailable(upper) < Self.fullMargin(totalBytes: upper.totalBytes, blockSize: upper.blockSize) {
                usage.state = .overflowed
            }
        }
        usage.cowMaxBytes = usage.cowTotalBytes
        return usage
    }
}
