import DiskImage
import Glibc
import LinuxBlock
import SandboxDiff

/// When the sandbox's changes do not fit a partition's filesystem (the root, /home...): the partition, which
/// must be the last, and the file with it grow to fit, the partition table is rewritten (identifiers kept,
/// GPT's backup moved to the new end) and the ext2/3/4 filesystem grown offline (a squashfs or erofs is made
/// anew: only its partition grows).
public enum PartitionGrow {
    /// 16 MiB and 2 % on top of the estimate: block groups' metadata, directories, the journal's reserve.
    static func margin(_ bytes: UInt64) -> UInt64 { 16 << 20 + bytes / 50 }

    /// Bytes the output's filesystem needs beyond `freeBytes` to take `changes`; 0 when they fit. The estimate is
    /// the blocks of every regular file written (added, or its content changed) less those of the image's
    /// files it replaces or deletes, and a block for every other entry added.
    public static func shortfall(of changes: [Change], sandboxRoot: String, pristineRoot: String,
                                 freeBytes: UInt64) throws(SaveError) -> UInt64 {
        var added: UInt64 = 0, freed: UInt64 = 0
        do {
            var sandbox = PathLookup(root: try Directory(root: sandboxRoot))
            var pristine = PathLookup(root: try Directory(root: pristineRoot))
            for change in changes {
                let writes = change.kind == .added || change.aspects.contains(.content) || change.aspects.contains(.type)
                if change.kind != .deleted, writes, let info = try sandbox.status(change.rawPath) {
                    added += info.st_mode & S_IFMT == S_IFREG ? UInt64(info.st_blocks) * 512 : 4096
                }
                if change.kind == .deleted || (change.kind == .modified && writes),
                   let info = try pristine.status(change.rawPath), info.st_mode & S_IFMT == S_IFREG {
                    freed += UInt64(info.st_blocks) * 512
                }
            }
        } catch {
            throw SaveError(error.description, errno: error.errno)
        }
        let needed = added > freed ? added - freed : 0
        let wanted = needed + margin(needed)
        return wanted > freeBytes ? wanted - freeBytes : 0
    }

    /// Grows `partition` (`name` in messages: "partition 3 (/home)") of the image at `path` (open as `fd`) by
    /// at least `bytes` (to a whole MiB) and its ext2/3/4 filesystem to fill it; ENOSPC, naming the partition
    /// and what it lacks, when it is not the last partition or holds another filesystem.
    public static func grow(image path: String, fd: Int32, partition: Partition, filesystem: FilesystemType, name: String,
                            table: PartitionTable, by bytes: UInt64, loopLabel: String, scratch: String) throws {
        let lacking = "\(name) lacks \((bytes + (1 << 20) - 1) >> 20) MiB for the changes"
        guard PartitionTableRewrite.isLast(partition, in: table) else {
            throw SaveError("\(lacking) and is not the last partition of the disk, so it cannot grow", errno: ENOSPC)
        }
        guard [.ext2, .ext3, .ext4].contains(filesystem) || filesystem.isReadOnly else {
            throw SaveError("\(lacking) and holds \(filesystem.rawValue); only ext2/3/4 can grow", errno: ENOSPC)
        }
        let mebibyte: UInt64 = 1 << 20
        let size = (partition.sizeBytes + bytes + mebibyte - 1) / mebibyte * mebibyte
        _ = try PartitionTableRewrite.setSize(of: partition, to: size / 512, image: path, fd: fd, scheme: table.scheme,
                                              scratch: scratch)
        guard !filesystem.isReadOnly else { return }  // made anew: it is written into the grown partition
        let loop = try LoopDevice.attach(file: path, offset: partition.startByte, sizeLimit: size, readOnly: false,
                                         autoclear: true, label: loopLabel)
        defer { try? loop.detach() }
        // resize2fs wants a freshly checked filesystem; status 1 means e2fsck corrected something.
        let checked = Result { () throws(CommandError) in try Command.run(["e2fsck", "-f", "-y", loop.path]) }
        if case .failure(let error) = checked, error.status != 1 { throw error }
        _ = try Command.run(["resize2fs", loop.path])
        try loop.detach()
    }
}
