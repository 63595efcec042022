import DiskImage
import Glibc
import LinuxBlock
import Synchronization

/// The seed's pipeline: per image a read-only loop device over the root partition and a `base` dm device
/// (linear over it plus a zero tail up to the grown size); per sandbox a zram COW store, a transient dm
/// snapshot of base, the mount, and an online grow of ext4. A filesystem with I/O units under 4 KiB gets a
/// 512-byte-sector loop device between zram and the snapshot (see CowStore).
/// A read-only filesystem (squashfs, erofs) cannot be mounted from a writable snapshot: its sandboxes are the
/// overlay engine's (the filesystem mounted read-only once, an ext4 upper on each sandbox's zram).
public struct DeviceMapperEngine: SandboxEngine {
    public let kind = "dm"
    let names: InstanceNames
    private let deviceMapper: DeviceMapper
    private let zram: Zram
    private let allocator: ZramAllocator
    let readOnlyFilesystems: OverlayEngine
    /// Shared with readOnlyFilesystems: one read-only loop device per partition for both.
    public var readOnlyLoops: ReadOnlyLoops { readOnlyFilesystems.readOnlyLoops }

    /// `zramLedger`: where the zram devices it adds are recorded for a sweep after a crash (nil: nowhere).
    public init(names: InstanceNames, deviceMapper: DeviceMapper, zram: Zram = Zram(), zramLedger: String? = nil) {
        self.names = names
        self.deviceMapper = deviceMapper
        self.zram = zram
        self.allocator = ZramAllocator(zram: zram, ledger: zramLedger)
        readOnlyFilesystems = OverlayEngine(names: names, zram: zram, zramLedger: zramLedger, deviceMapper: deviceMapper)
    }

    final class ImageAttachment: EngineAttachment {
        let teardown: Teardown
        let base: DMDevice
        let sectors: UInt64
        let filesystem: FilesystemInfo
        /// The image (name, file, root partition, serial), for the read-only mount diff compares with.
        let name: String
        let path: String
        let partition: Partition
        let serial: UInt64
        /// btrfs: the root's subvolume.
        let subvolume: BtrfsSubvolume?
        /// That mount, once a diff or save made it (see changeSource), and its loop device.
        let pristineRoot = Mutex<(path: String, loop: String)?>(nil)
        /// Other btrfs subvolumes mounted from that loop device, by mount option.
        let pristineSubvolumes = Mutex<[String: String]>([:])
        init(teardown: Teardown, base: DMDevice, sectors: UInt64, request: ImageRequest) {
            self.teardown = teardown
            self.base = base
            self.sectors = sectors
            filesystem = request.root.filesystem
            name = request.name
            path = request.path
            partition = request.root.partition
            serial = request.serial
            subvolume = request.root.subvolume
        }
    }

    final class SandboxAttachment: EngineAttachment {
        let teardown: Teardown
        let snapshotName: String
        let cow: CowStore
        let mountPath: String
        let devicePath: String
        init(teardown: Teardown, snapshotName: String, cow: CowStore, mountPath: String, devicePath: String) {
            self.teardown = teardown
            self.snapshotName = snapshotName
            self.cow = cow
            self.mountPath = mountPath
            self.devicePath = devicePath
        }
    }

    public func attachImage(_ request: ImageRequest) throws -> any EngineAttachment {
        if request.root.filesystem.type.isReadOnly { return try readOnlyFilesystems.attachImage(request) }
        let teardown = Teardown()
        return try building(teardown) {
            let partition = request.root.partition
            // Only the partition's bytes: a loop device over the whole image would show the host's kernel (with
            // loop's max_part set) and udev the image's partitions, and lvm2's rules would activate a PV among them.
            // A partition in several ranges (a split LV): the loop device spans them, base joins them.
            let span = try step("map \(partition.typeName)") {
                partition.isContiguous ? partition.ranges[0] : try SplitPartitionDevice.span(partition)
            }
            let loop = try step("attach loop device") {
                try LoopDevice.attach(file: request.path, offset: span.offset, sizeLimit: span.length,
                                      readOnly: true, autoclear: true, label: names.loopLabel(image: request.name))
            }
            teardown.push("detach \(loop.path)") { try loop.detach() }
            let partitionSectors = partition.sizeBytes / 512
            let growSectors = request.settings.effectiveGrow / 512
            let ranges = partition.isContiguous
                ? [DMTarget.linear(start: 0, length: partitionSectors, device: loop.deviceNumber, offset: 0)]
                : try step("map \(partition.typeName)") {
                    try SplitPartitionDevice.table(partition, span: span, loop: loop.deviceNumber)
                }
            let table = (ranges + [DMTarget.zero(start: partitionSectors, length: growSectors)]).filter { $0.length > 0 }
            let name = names.baseDevice(image: request.serial)
            let base = try step("create dm \(name)") {
                try deviceMapper.create(name: name, uuid: InstanceNames.dmUUID(name, request.name),
                                        targets: table, readOnly: true)
            }
            teardown.push("remove dm \(name)") { try deviceMapper.remove(name: name) }
            return ImageAttachment(teardown: teardown, base: base, sectors: partitionSectors + growSectors, request: request)
        }
    }

    public func createSandbox(_ request: SandboxRequest, on image: any EngineAttachment) throws -> any EngineAttachment {
        if image is OverlayEngine.ImageAttachment { return try readOnlyFilesystems.createSandbox(request, on: image) }
        guard let image = image as? ImageAttachment else { preconditionFailure("attachment of another engine") }
        let teardown = Teardown()
        return try building(teardown) {
            let name = names.snapshotDevice(sandbox: request.serial)
            let cowName = names.cowDevice(sandbox: request.serial)
            // zram's 4 KiB logical blocks would become the snapshot's and refuse smaller filesystem I/O.
            let smallSectors = image.filesystem.ioUnit < 4096
            let (store, cow) = try CowStore.make(
                name: cowName, uuid: InstanceNames.dmUUID(cowName, request.image, request.name),
                settings: request.settings,
                smallSectorLabel: smallSectors
                    ? names.cowLoopLabel(sandbox: request.serial, image: request.image, name: request.name) : nil,
                allocator: allocator, deviceMapper: deviceMapper, teardown: teardown)
            let snapshot = DMTarget.snapshot(start: 0, length: image.sectors, origin: image.base.deviceNumber, cow: cow,
                                             persistent: false, chunkSectors: max(1, request.settings.chunkSize / 512))
            let device = try step("create dm snapshot \(name)") {
                try deviceMapper.create(name: name, uuid: InstanceNames.dmUUID(name, request.image, request.name),
                                        targets: [snapshot], readOnly: false)
            }
            teardown.push("remove dm \(name)") { try deviceMapper.remove(name: name) }
            let fsType = image.filesystem.type.rawValue
            if image.filesystem.type == .btrfs {
                // Every snapshot (and the image's own loop device) carries the image's fsid; before Linux 6.7 btrfs
                // refuses to mount a second device with an fsid already mounted (EBUSY). A new fsid in this copy's
                // superblocks alone (metadata_uuid: the tree blocks keep the old one) makes it a filesystem of its own.
                try step("give \(device.path) an fsid of its own (btrfstune -m)") {
                    _ = try Command.run(["btrfstune", "-m", device.path])
                }
            }
            teardown.pushRemovalOfMountPoint(request.mountPath)
            try step("mount \(device.path) on \(request.mountPath)") {
                try Mount.mount(source: device.path, target: request.mountPath, type: fsType, flags: [.nosuid, .nodev],
                                options: image.subvolume.map(\.mountOption) ?? "")
            }
            teardown.push("unmount \(request.mountPath)") { try Mount.unmountNamingHolders(request.mountPath) }
            if [.ext2, .ext3, .ext4].contains(image.filesystem.type) {
                let blocks = image.sectors * 512 / UInt64(image.filesystem.blockSize)
                try step("grow \(fsType) on \(request.mountPath) to \(blocks) blocks") {
                    try Ext4.growOnline(mountPath: request.mountPath, toBlocks: blocks)
                }
            }
            return SandboxAttachment(teardown: teardown, snapshotName: name, cow: store, mountPath: request.mountPath,
                                     devicePath: device.path)
        }
    }

    /// The same snapshot mounted again with the other subvolume: one superblock, one COW store.
    public func mountSubvolume(_ subvolume: BtrfsSubvolume?, of sandbox: any EngineAttachment, image: any EngineAttachment,
                               at mountPath: String) throws -> any EngineAttachment {
        guard let sandbox = sandbox as? SandboxAttachment, let image = image as? ImageAttachment else {
            preconditionFailure("attachment of another engine")
        }
        let teardown = Teardown()
        return try building(teardown) {
            teardown.pushRemovalOfMountPoint(mountPath)
            try step("mount \(sandbox.devicePath) on \(mountPath)") {
                try Mount.mount(source: sandbox.devicePath, target: mountPath, type: image.filesystem.type.rawValue,
                                flags: [.nosuid, .nodev], options: subvolume?.mountOption ?? "")
            }
            teardown.push("unmount \(mountPath)") { try Mount.unmountNamingHolders(mountPath) }
            return SubvolumeAttachment(teardown: teardown, owner: sandbox, subvolume: subvolume, mountPath: mountPath,
                                       pristineRoot: "", upperRoot: nil, writablePath: sandbox.mountPath)
        }
    }

    public func usage(of sandbox: any EngineAttachment) -> SandboxUsage {
        if let part = sandbox as? SubvolumeAttachment { return usage(of: part.owner) }
        if sandbox is OverlayEngine.SandboxAttachment { return readOnlyFilesystems.usage(of: sandbox) }
        guard let sandbox = sandbox as? SandboxAttachment else { return SandboxUsage() }
        var usage = cowUsage(of: sandbox)
        usage.fillZram(zram, ids: sandbox.cow.zramIDs)
        usage.fillFilesystem(sandbox.mountPath)
        return usage
    }

    public func cowUsage(of sandbox: any EngineAttachment) -> SandboxUsage {
        if let part = sandbox as? SubvolumeAttachment { return cowUsage(of: part.owner) }
        if sandbox is OverlayEngine.SandboxAttachment { return readOnlyFilesystems.cowUsage(of: sandbox) }
        guard let sandbox = sandbox as? SandboxAttachment else { return SandboxUsage() }
        var usage = SandboxUsage()
        if let line = try? deviceMapper.status(name: sandbox.snapshotName).first?.status,
           let status = SnapshotStatus(statusLine: line) {
            switch status {
            case .active(let used, let total, _):
                usage.cowUsedBytes = used * 512
                usage.cowTotalBytes = total * 512
            case .invalid, .overflow:
                usage.state = .overflowed
                usage.cowTotalBytes = sandbox.cow.zramIDs.reduce(0) { $0 + ((try? zram.disksize($1)) ?? 0) }
                usage.cowUsedBytes = usage.cowTotalBytes
            case .merging:
                break
            }
        }
        usage.cowMaxBytes = max(sandbox.cow.maxBytes, usage.cowTotalBytes)
        return usage
    }

    public func makeBlockStore(bytes: UInt64, teardown: Teardown) throws -> Int32 {
        try allocator.blockStore(bytes: bytes, teardown: teardown)
    }

    public func growCowStore(of sandbox: any EngineAttachment, usage: SandboxUsage) throws -> UInt64? {
        guard let sandbox = sandbox as? SandboxAttachment, usage.state == .active else { return nil }  // a subvolume: its owner grows
        return try sandbox.cow.grow(usedBytes: usage.cowUsedBytes, totalBytes: usage.cowTotalBytes)
    }
}

extension SandboxUsage {
    /// Sums mm_stat over the sandbox's zram devices.
    mutating func fillZram(_ zram: Zram, ids: [Int]) {
        for id in ids {
            guard let stats = try? zram.memoryStats(id) else { continue }
            zramOriginalBytes += stats.originalBytes
            zramCompressedBytes += stats.compressedBytes
            zramMemoryBytes += stats.memoryUsedBytes
        }
    }

    mutating func fillFilesystem(_ mountPath: String) {
        guard let fs = try? FilesystemUsage.of(mountPath) else { return }
        filesystemSizeBytes = fs.totalBytes
        filesystemFreeBytes = fs.availableBytes
    }
}
