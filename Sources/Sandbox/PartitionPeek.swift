import DiskImage
import Glibc
import LinuxBlock
import Synchronization

/// Read-only looks inside an image's partitions before its root is chosen (boot files on an ext4 /boot,
/// a candidate's /etc/fstab): the partition through a read-only loop device, mounted ro,nosuid,nodev,noexec
/// (a dirty journal not replayed) on a private directory of the run directory, all released before `look`
/// returns. What is read goes through RootFiles (no symlink of the image followed).
struct PartitionPeek {
    let names: InstanceNames
    let imagePath: String
    let imageName: String
    let loops: ReadOnlyLoops

    private static let serial = Atomic<UInt64>(0)

    /// Runs `body` on the partition mounted read-only (with `options`, e.g. a btrfs subvolume).
    func look<T>(_ partition: Partition, _ filesystem: FilesystemInfo, options: [String] = [],
                 _ body: (String) -> T) throws(SandboxError) -> T {
        let teardown = Teardown()
        defer { teardown.runAll() }
        let loop = try step("attach loop device") {
            try loops.acquire(file: imagePath, partition: partition, label: names.loopLabel(image: imageName), teardown: teardown)
        }
        let target = "\(names.runDirectory)/peek-\(Self.serial.wrappingAdd(1, ordering: .relaxed).newValue)"
        try step("create \(target)") { try PrivateDirectory.create(target) }
        teardown.push("remove \(target)") { try PrivateDirectory.remove(target) }
        let type = filesystem.type
        let all = [OverlayEngine.noReplayOption(type)].filter { !$0.isEmpty } + options
        try step("mount \(loop) read-only on \(target)") {
            try Mount.mount(source: loop, target: target, type: type.rawValue, flags: [.rdonly, .nosuid, .nodev, .noexec],
                            options: all.joined(separator: ","))
        }
        teardown.push("unmount \(target)") { try Mount.unmount(target) }
        return body(target)
    }
}
