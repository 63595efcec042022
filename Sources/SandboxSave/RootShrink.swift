import CLinux
import DiskImage
import Glibc
import LinuxBlock

/// `save --shrink`, as PiShrink does it: the root filesystem resized offline to its minimum plus a
/// margin, its partition and the file cut to match. The root must be the last partition, where Raspberry
/// Pi OS's first boot grows it back to fill the card.
public enum RootShrink {
    /// Returns the new file size, or nil when the root is already no bigger than content + margin.
    public static func shrink(image path: String, fd: Int32, root: RootPartition, loopLabel: String,
                              scratch: String) throws -> UInt64? {
        let partition = root.partition
        guard [.ext2, .ext3, .ext4].contains(root.filesystem.type) else {
            throw SaveError("--shrink: the root holds \(root.filesystem.type.rawValue); only ext2/3/4 can shrink", errno: EOPNOTSUPP)
        }
        guard PartitionTableRewrite.isLast(partition, in: root.table) else {
            throw SaveError("--shrink: the root partition is not the last primary partition of the disk; it cannot change size", errno: EOPNOTSUPP)
        }
        let blockSize = UInt64(root.filesystem.blockSize)
        let loop = try LoopDevice.attach(file: path, offset: partition.startByte, sizeLimit: partition.sizeBytes,
                                         readOnly: false, autoclear: true, label: loopLabel)
        var detached = false
        defer { if !detached { try? loop.detach() } }
        // resize2fs insists on a freshly checked filesystem; status 1 means e2fsck corrected something.
        func checkAndRepair() throws {
            let checked = Result { () throws(CommandError) in try Command.run(["e2fsck", "-f", "-y", loop.path]) }
            if case .failure(let error) = checked, error.status != 1 { throw error }
        }
        try checkAndRepair()
        let estimate = try Command.run(["resize2fs", "-P", loop.path])
        guard let minimum = estimate.split(separator: "\n").compactMap({ line -> UInt64? in
            guard line.contains("minimum size") else { return nil }
            return line.split(separator: ":").last.flatMap { UInt64(trimmed($0)) }
        }).first else { throw SaveError("resize2fs -P gave no estimate: \(estimate)", errno: EIO) }
        // Room for logs and the first boot's writes: 5 %, at least 64 MiB.
        func withMargin(_ blocks: UInt64) -> UInt64 { blocks + max(blocks / 20, (64 << 20) / blockSize) }
        let safe = withMargin(minimum)
        // resize2fs -P can be far above the content (387,269 blocks for 222,444 in use on a 2 GiB Pi
        // root: its sum for the last group), so the content plus the margin is tried first, forced past
        // that estimate. resize2fs checks for room before it moves a block: a refusal leaves a
        // filesystem e2fsck restores, and the estimate's size follows.
        let usage = try superblockUsage(loop.path)
        let content = max(withMargin(usage.usedBlocks), usage.blocksForUsedInodes)
        let blocks = partition.sizeBytes / blockSize
        func resizedPastTheEstimate(to size: UInt64) throws -> Bool {
            if (try? Command.run(["resize2fs", "-f", loop.path, "\(size)"])) != nil { return true }
            try checkAndRepair()
            return false
        }
        let target: UInt64
        if content < min(safe, blocks), try resizedPastTheEstimate(to: content) {
            target = content
        } else {
            guard safe < blocks else { return nil }
            _ = try Command.run(["resize2fs", loop.path, "\(safe)"])
            target = safe
        }
        try loop.detach()
        detached = true
        let mebibyteSectors: UInt64 = 2048
        let sectors = (target * blockSize / 512 + mebibyteSectors - 1) / mebibyteSectors * mebibyteSectors
        return try PartitionTableRewrite.setSize(of: partition, to: sectors, image: path, fd: fd,
                                                 scheme: root.table.scheme, scratch: scratch)
    }
}

/// Rewrites an image's partition table with sfdisk, from its own dump, so the disk identifier and
/// every partition's identifiers, types and names stay; GPT gets its backup at the new end.
public enum PartitionTableRewrite {
    /// True when the partition is the last one on the disk (and a primary one on MBR): it can change size.
    public static func isLast(_ partition: Partition, in table: PartitionTable) -> Bool {
        let end = partition.startByte + partition.sizeBytes
        let last = table.partitions.allSatisfy { $0.number == partition.number || $0.startByte + $0.sizeBytes <= partition.startByte }
        return table.scheme != .none && last && end <= table.diskSize && (table.scheme == .gpt || partition.number <= 4)
    }

    /// Returns the new file size.
    public static func setSize(of partition: Partition, to sectors: UInt64, image path: String, fd: Int32,
                               scheme: PartitionScheme, scratch: String) throws -> UInt64 {
        let dump = try Command.run(["sfdisk", "-d", path])
        let start = partition.startByte / 512
        var found = false
        var lines: [String] = []
        for line in dump.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if scheme == .gpt, line.hasPrefix("last-lba:") { continue }  // sfdisk puts it at the new end
            let fields = line.split(separator: ",").map { trimmed($0) }
            if let first = fields.first, String(first.filter { $0 != " " }).hasSuffix(":start=\(start)") {
                found = true
                lines.append(fields.map { $0.hasPrefix("size=") ? "size=\(sectors)" : $0 }.joined(separator: ", "))
            } else {
                lines.append(line)
            }
        }
        guard found else { throw SaveError("sfdisk -d shows no partition at sector \(start)", errno: EIO) }
        // GPT keeps a backup table (32 sectors of entries and a header) after the last partition.
        let size = (start + sectors) * 512 + (scheme == .gpt ? 33 * 512 : 0)
        guard ftruncate(fd, off_t(size)) == 0 else { throw SaveError("truncate \(path)", errno: errno) }
        let text = lines.joined(separator: "\n")
        // A name of its own: two saves (of one image: same start) may rewrite tables at once.
        var template = Array("\(scratch)/sfdisk-XXXXXX".utf8CString)
        let scriptFD = template.withUnsafeMutableBufferPointer { clinux_mkstemp_cloexec($0.baseAddress!) }
        let script = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        guard scriptFD >= 0 else { throw SaveError("create \(script)", errno: errno) }
        defer { unlink(script) }
        let written = text.withCString { write(scriptFD, $0, strlen($0)) }
        close(scriptFD)
        guard written == text.utf8.count else { throw SaveError("write \(script)", errno: errno) }
        _ = try Command.run(["sh", "-c", "exec sfdisk -q --no-reread --no-tell-kernel --wipe never --wipe-partitions never \"$1\" < \"$2\"",
                             "sh", path, script])
        return size
    }
}

/// The superblock's counts, read from the device e2fsck has just made them exact on.
private func superblockUsage(_ device: String) throws -> ExtUsage {
    let bytes: [UInt8]
    do {
        bytes = try FileByteSource(path: device).read(at: 1024, count: 1024)
    } catch {
        throw SaveError("read the superblock of \(device): \(error)", errno: error.errno)
    }
    guard let usage = ExtUsage(superblock: bytes) else {
        throw SaveError("the superblock of \(device) has inconsistent counts", errno: EUCLEAN)
    }
    return usage
}

func trimmed(_ text: some StringProtocol) -> String {
    String(text.drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
}

/// `e2fsck -fn` of the output's root partition, through a read-only loop device.
public enum RootCheck {
    public static func check(image path: String, partition root: RootPartition, loopLabel: String) throws {
        guard [.ext2, .ext3, .ext4].contains(root.filesystem.type) else { return }
        let partition = root.partition
        let loop = try LoopDevice.attach(file: path, offset: partition.startByte, sizeLimit: partition.sizeBytes,
                                         readOnly: true, autoclear: true, label: loopLabel)
        defer { try? loop.detach() }
        _ = try Command.run(["e2fsck", "-f", "-n", loop.path])
    }
}
