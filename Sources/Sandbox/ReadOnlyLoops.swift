import DiskImage
import LinuxBlock
import Synchronization

/// The read-only loop devices over image partitions, one per file region, shared by everything that mounts
/// that partition read-only (overlay's lower, `pristine/`, dm's copy for diff, the root choice's looks, a
/// btrfs's further subvolumes). btrfs before Linux 6.7 refuses a second device whose fsid is already mounted
/// (EBUSY); one device is one superblock, which any number of read-only mounts share.
public final class ReadOnlyLoops: Sendable {
    private struct Region: Hashable {
        let file: String
        let offset: UInt64
        let size: UInt64
    }

    private let devices = Mutex<[Region: (device: LoopDevice, users: Int)]>([:])

    public init() {}

    /// The device over `partition` of `file`; `teardown` gets its release (detached when its last user lets
    /// go), so push it before the mount that uses it.
    func acquire(file: String, partition: Partition, label: String, teardown: Teardown) throws(SystemError) -> String {
        let region = Region(file: file, offset: partition.startByte, size: partition.sizeBytes)
        let path = try devices.withLock { (devices) throws(SystemError) -> String in
            if let known = devices[region] {
                devices[region] = (known.device, known.users + 1)
                return known.device.path
            }
            let device = try LoopDevice.attach(file: file, offset: region.offset, sizeLimit: region.size,
                                               readOnly: true, autoclear: true, label: label)
            devices[region] = (device, 1)
            return device.path
        }
        teardown.push("release \(path)") { try self.release(region) }
        return path
    }

    private func release(_ region: Region) throws {
        let last = devices.withLock { devices -> LoopDevice? in
            guard let known = devices[region] else { return nil }
            if known.users > 1 {
                devices[region] = (known.device, known.users - 1)
                return nil
            }
            devices[region] = nil
            return known.device
        }
        try last?.detach()
    }
}
