import DiskImage
import Glibc
import LinuxBlock
import Synchronization

/// The read-only loop devices over image partitions, one per file region, shared by everything that mounts
/// that partition read-only (overlay's lower, `pristine/`, dm's copy for diff, the root choice's looks, a
/// btrfs's further subvolumes). btrfs before Linux 6.7 refuses a second device whose fsid is already mounted
/// (EBUSY); one device is one superblock, which any number of read-only mounts share.
/// A partition in several ranges (SplitPartitionDevice) needs device-mapper: without it, ENOTSUP.
public final class ReadOnlyLoops: Sendable {
    private struct Region: Hashable {
        let file: String
        let ranges: [ByteRange]
    }

    private struct Device {
        let loop: LoopDevice
        /// The dm linear device joining a split partition's ranges (its path is the one handed out).
        let joined: DMDevice?
        var path: String { joined?.path ?? loop.path }
    }

    private let devices = Mutex<[Region: (device: Device, users: Int)]>([:])
    private let joiner: (deviceMapper: DeviceMapper, names: InstanceNames)?
    private let views = Atomic<UInt64>(0)

    /// `deviceMapper` and `names`: how a partition in several ranges is joined (nil: it is refused).
    public init(deviceMapper: DeviceMapper? = nil, names: InstanceNames? = nil) {
        if let deviceMapper, let names { joiner = (deviceMapper, names) } else { joiner = nil }
    }

    /// Whether a partition in several ranges gets a device (device-mapper is there) or ENOTSUP.
    var joinsRanges: Bool { joiner != nil }

    /// The device over `partition` of `file`; `teardown` gets its release (detached when its last user lets
    /// go), so push it before the mount that uses it.
    func acquire(file: String, partition: Partition, label: String, teardown: Teardown) throws(SystemError) -> String {
        let region = Region(file: file, ranges: partition.ranges)
        let path = try devices.withLock { (devices) throws(SystemError) -> String in
            if let known = devices[region] {
                devices[region] = (known.device, known.users + 1)
                return known.device.path
            }
            let device = try attach(file: file, partition: partition, label: label)
            devices[region] = (device, 1)
            return device.path
        }
        teardown.push("release \(path)") { try self.release(region) }
        return path
    }

    private func attach(file: String, partition: Partition, label: String) throws(SystemError) -> Device {
        if partition.isContiguous {
            return Device(loop: try LoopDevice.attach(file: file, offset: partition.startByte, sizeLimit: partition.sizeBytes,
                                                      readOnly: true, autoclear: true, label: label), joined: nil)
        }
        guard let joiner else {
            throw SystemError("serve \(partition.typeName), which lies in \(partition.ranges.count) separate ranges of the image, without device-mapper:",
                              file, errno: ENOTSUP)
        }
        let span = try SplitPartitionDevice.span(partition)
        let loop = try LoopDevice.attach(file: file, offset: span.offset, sizeLimit: span.length,
                                         readOnly: true, autoclear: true, label: label)
        do throws(SystemError) {
            let name = joiner.names.readOnlyDevice(view: views.wrappingAdd(1, ordering: .relaxed).newValue)
            let table = try SplitPartitionDevice.table(partition, span: span, loop: loop.deviceNumber)
            let joined = try joiner.deviceMapper.create(name: name, uuid: InstanceNames.dmUUID(name, label),
                                                        targets: table, readOnly: true)
            return Device(loop: loop, joined: joined)
        } catch {
            try? loop.detach()
            throw error
        }
    }

    private func release(_ region: Region) throws {
        let last = devices.withLock { devices -> Device? in
            guard let known = devices[region] else { return nil }
            if known.users > 1 {
                devices[region] = (known.device, known.users - 1)
                return nil
            }
            devices[region] = nil
            return known.device
        }
        guard let last else { return }
        // The loop device goes even when the dm device does not (autoclear: then when the dm device goes).
        var failure: (any Error)?
        if let joined = last.joined, let joiner {
            do { try joiner.deviceMapper.remove(name: joined.name) } catch { failure = error }
        }
        try last.loop.detach()
        if let failure { throw failure }
    }
}
