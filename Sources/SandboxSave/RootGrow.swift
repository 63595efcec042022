import DiskImage
import Glibc
import LinuxBlock
import SandboxDiff

/// When the sandbox's changes do not fit the image's root filesystem: the root (the last partition), and
/// the file with it, grow to fit, the partition table is rewritten (identifiers kept, GPT's backup moved to
/// the new end) and the filesystem grown offline.
public enum RootGrow {
    /// 16 MiB and 2 % on top of the estimate: block groups' metadata, directories, the journal's reserve.
    static func margin(_ bytes: UInt64) -> UInt64 { 16 << 20 + bytes / 50 }

    /// Bytes the output's root needs beyond `freeBytes` to take `changes`; 0 when they fit. The estimate is
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

    /// Grows the root partition of the image at `path` (open as `fd`) by at least `bytes` (to a whole MiB)
    /// and its ext2/3/4 filesystem to fill it.
    public static func grow(image path: String, fd: Int32, root: RootPartition, by bytes: UInt64, loopLabel: String,
                            scratch: String) throws {
        let partition = root.partition
        guard [.ext2, .ext3, .ext4].contains(root.filesystem.type) else {
            throw SaveError("the changes need \(bytes >> 20) MiB more than the root (\(root.filesystem.type.rawValue)) has; only ext2/3/4 can grow",
                            errno: ENOSPC)
        }
        do {
            try PartitionTableRewrite.checkLast(partition, in: root.table)
        } catch {
            throw SaveError("the changes need \(bytes >> 20) MiB more than the root partition has, and \(error)", errno: ENOSPC)
        }
        let mebibyte: UInt64 = 1 << 20
        let size = (partition.sizeBytes + bytes + mebibyte - 1) / mebibyte * mebibyte
        _ = try PartitionTableRewrite.setSize(of: partition, to: size / 512, image: path, fd: fd, scheme: root.table.scheme,
                                              scratch: scratch)
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

/// lstat by path from a tree's root, one component at a time without following symlinks.
struct PathLookup {
    let root: Directory
    private var last: (path: [UInt8], directory: Directory?)?

    init(root: Directory) { self.root = root }

    mutating func status(_ path: [UInt8]) throws(DiffError) -> stat? {
        let slash = path.lastIndex(of: UInt8(ascii: "/")) ?? 0
        let parentPath = Array(path[..<slash]), name = Array(path[(slash + 1)...])
        if name.isEmpty { return try root.status([]) }
        let parent: Directory?
        if let last, last.path == parentPath {
            parent = last.directory
        } else {
            parent = try open(parentPath)
            last = (parentPath, parent)
        }
        return try parent?.status(name)
    }

    private func open(_ path: [UInt8]) throws(DiffError) -> Directory? {
        var directory = root
        for component in path.split(separator: UInt8(ascii: "/")) {
            do {
                directory = try directory.child(Array(component))
            } catch where [ENOENT, ENOTDIR, ELOOP].contains(error.errno) {
                return nil
            }
        }
        return directory
    }
}
