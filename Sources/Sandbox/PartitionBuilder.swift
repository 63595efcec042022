import DiskImage
import FATFS
import Glibc
import LinuxBlock
import Logging

/// Decides and builds the partitions a tree shows below its root (see PartitionMounts.resolve for which).
struct PartitionBuilder {
    let imageName: String
    let imagePath: String
    let root: RootPartition
    let logger: Logger

    /// The plan for a root filesystem mounted at `rootMount` (its own /etc/fstab); one log line per skipped entry.
    func plan(rootMount: String) -> PartitionMountPlan {
        let text = RootFiles.read(rootMount, "etc/fstab", limit: Fstab.maxBytes)
        let source = try? FileByteSource(path: imagePath)
        let volumes = source.map { LVM.volumes($0, table: root.table).volumes } ?? []
        let plan = PartitionMounts.resolve(
            fstab: text.map { Fstab.parse($0) }, table: root.table, root: root.partition, volumes: volumes,
            rootSubvolume: root.subvolume, slot: root.slot,
            probe: { p in source.flatMap { FilesystemProbe.probe($0, partition: p) } },
            isEmptyDirectory: { RootFiles.isEmptyDirectory(rootMount, $0) })
        for skipped in plan.skipped where skipped.reason != "swap" {
            logger.debug("image \(imageName): fstab entry \"\(skipped.entry)\" not shown: \(skipped.reason)")
        }
        if text == nil && !plan.mounts.isEmpty {
            logger.debug("image \(imageName): no /etc/fstab; the only FAT partition goes to \(plan.mounts[0].mountPoint)")
        }
        return plan
    }

    /// Opens the image read-only (never following a symlink); the fd is closed by `teardown`.
    func openImage(_ teardown: Teardown) throws -> Int32 {
        teardown.own(try FileDescriptor.open(imagePath, O_RDONLY | O_NOFOLLOW), imagePath)
    }

    /// A FAT volume straight on the image's bytes, read-only (pristine).
    func pristineFAT(_ mount: PartitionMount, imageFD: Int32) throws -> FATVolume {
        let p = mount.partition
        if let reason = p.notContiguousReason("FAT partition \(mount.mountPoint)") { throw SandboxError.unsupported(reason) }
        let base = FileRegionDevice(fd: imageFD, offset: p.startByte, size: p.sizeBytes, writable: false)
        return try fatVolume(mount) { () throws(FATError) in try FATVolume(device: base, readOnly: true) }
    }

    /// A writable FAT volume over a block COW of the partition kept in `storePath` (a zram device or memfd of
    /// `limit` bytes): the image is only read.
    func sandboxFAT(_ mount: PartitionMount, imageFD: Int32, storeFD: Int32, limit: UInt64) throws -> (FATVolume, COWOverlay) {
        let p = mount.partition
        if let reason = p.notContiguousReason("FAT partition \(mount.mountPoint)") { throw SandboxError.unsupported(reason) }
        let base = FileRegionDevice(fd: imageFD, offset: p.startByte, size: p.sizeBytes, writable: false)
        let overlay = COWOverlay(base: base, store: FileBlockStore(fd: storeFD, blockSize: Self.cowBlock),
                                 blockSize: Self.cowBlock, limitBytes: limit)
        let volume = try fatVolume(mount) { () throws(FATError) in try FATVolume(device: overlay, readOnly: mount.readOnly) }
        return (volume, overlay)
    }

    static let cowBlock = 4096

    private func fatVolume(_ mount: PartitionMount, _ open: () throws(FATError) -> FATVolume) throws -> FATVolume {
        do {
            return try open()
        } catch {
            throw SystemError("open FAT volume", "partition \(mount.partition.number) of \(imageName) (\(error.message))",
                              errno: error.errno)
        }
    }
}

extension RootPartition {
    /// The same table with another partition as "root": what an engine attaches for a separate /home.
    func with(partition: Partition, filesystem: FilesystemInfo, subvolume: BtrfsSubvolume? = nil) -> RootPartition {
        RootPartition(partition: partition, filesystem: filesystem, table: table, subvolume: subvolume)
    }
}
