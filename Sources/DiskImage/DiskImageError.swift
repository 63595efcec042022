import Glibc

/// Everything that can go wrong while reading an image. Image content is untrusted, so every
/// malformed structure becomes one of these cases (never a trap).
public enum DiskImageError: Error, Sendable, Equatable, CustomStringConvertible {
    // The file itself.
    case emptyImage
    case sizeNotSectorMultiple(size: UInt64)
    case openFailed(path: String, errno: Int32)
    case sizeQueryFailed(errno: Int32)
    case readFailed(offset: UInt64, count: Int, errno: Int32)
    case shortRead(offset: UInt64, wanted: Int, got: Int)
    case readBeyondEnd(offset: UInt64, count: Int, size: UInt64)

    // Partition tables.
    case partitionBeyondEnd(number: Int, startSector: UInt64, sectorCount: UInt64, diskSectors: UInt64)
    case partitionOverlapsTable(number: Int, startSector: UInt64)
    case overlappingPartitions(first: Int, second: Int)
    case extendedChainLoop(sector: UInt64)
    case extendedChainTooLong(limit: Int)
    case extendedRecordBeyondEnd(sector: UInt64, diskSectors: UInt64)
    case gptHeadersInvalid(primary: String, backup: String)
    case gptEntryArrayCRCMismatch(stored: UInt32, computed: UInt32)
    case gptTooManyEntries(count: UInt32, entrySize: UInt32, limitBytes: Int)
    case gptBadEntrySize(UInt32)
    case gptEntryArrayBeyondEnd(lba: UInt64, bytes: UInt64, diskSectors: UInt64)
    case gptEntryReversed(number: Int, firstLBA: UInt64, lastLBA: UInt64)

    // Choosing the root.
    case noSuchPartition(number: Int, available: [Int])
    case notLinuxFilesystem(partition: Int, found: String?)
    case noLinuxPartition(scheme: PartitionScheme, partitionCount: Int)
    /// The boot configuration names a logical volume that cannot be served (non-linear, bad metadata).
    case logicalVolume(group: String, volume: String, LVMError)
    /// The OS is a filesystem image stored as a file (LibreELEC's SYSTEM squashfs on its FAT partition):
    /// no partition is its root, and the largest Linux one would be its (empty) data partition.
    case rootIsAFile(partition: Int, file: String, largest: Int?)

    /// The errno a caller (FUSE, CLI exit) should see: EIO for I/O failures, EMEDIUMTYPE when the
    /// image is well formed but holds nothing usable, EINVAL for malformed input; a failed open
    /// keeps its own errno (ENOENT, ELOOP, EACCES...).
    public var errno: Int32 {
        switch self {
        case .openFailed(_, let e), .sizeQueryFailed(let e): return e
        case .readFailed, .shortRead: return EIO
        case .notLinuxFilesystem, .noLinuxPartition: return EMEDIUMTYPE
        case .logicalVolume(_, _, let e): return e.errno
        case .rootIsAFile: return ENOTSUP
        default: return EINVAL
        }
    }

    public var description: String {
        switch self {
        case .emptyImage:
            return "image is empty (0 bytes)"
        case .sizeNotSectorMultiple(let size):
            return "image size \(size) bytes is not a multiple of the 512-byte sector (\(size % 512) bytes left over)"
        case .openFailed(let path, let e):
            return "cannot open image \(path): \(errnoText(e))"
        case .sizeQueryFailed(let e):
            return "cannot determine image size (lseek SEEK_END): \(errnoText(e))"
        case .readFailed(let offset, let count, let e):
            return "read of \(count) bytes at offset \(offset) failed: \(errnoText(e))"
        case .shortRead(let offset, let wanted, let got):
            return "short read at offset \(offset): wanted \(wanted) bytes, got \(got) (image truncated while reading?)"
        case .readBeyondEnd(let offset, let count, let size):
            return "image structure points outside the image: \(count) bytes at offset \(offset), image is \(size) bytes"
        case .partitionBeyondEnd(let n, let start, let count, let disk):
            return "partition \(n) (sectors \(start)+\(count)) extends beyond the end of the image (\(disk) sectors)"
        case .partitionOverlapsTable(let n, let start):
            return "partition \(n) starts at sector \(start), inside the partition table"
        case .overlappingPartitions(let a, let b):
            return "partitions \(a) and \(b) overlap"
        case .extendedChainLoop(let sector):
            return "extended partition chain loops back to the boot record at sector \(sector)"
        case .extendedChainTooLong(let limit):
            return "extended partition chain is longer than \(limit) logical partitions"
        case .extendedRecordBeyondEnd(let sector, let disk):
            return "extended boot record at sector \(sector) lies beyond the end of the image (\(disk) sectors)"
        case .gptHeadersInvalid(let primary, let backup):
            return "no usable GPT header: primary: \(primary); backup: \(backup)"
        case .gptEntryArrayCRCMismatch(let stored, let computed):
            return "GPT partition entry array CRC32 mismatch in primary and backup: stored \(hex32(stored)), computed \(hex32(computed))"
        case .gptTooManyEntries(let count, let size, let limit):
            return "GPT declares \(count) entries of \(size) bytes, more than the \(limit)-byte limit"
        case .gptBadEntrySize(let size):
            return "GPT entry size \(size) is invalid (must be at least 128 and a multiple of 8)"
        case .gptEntryArrayBeyondEnd(let lba, let bytes, let disk):
            return "GPT entry array (\(bytes) bytes at sector \(lba)) lies beyond the end of the image (\(disk) sectors)"
        case .gptEntryReversed(let n, let first, let last):
            return "GPT partition \(n) ends (sector \(last)) before it starts (sector \(first))"
        case .noSuchPartition(let n, let available):
            let list = available.isEmpty ? "none" : available.map(String.init).joined(separator: ", ")
            return "no partition \(n) in image (partitions: \(list))"
        case .notLinuxFilesystem(let n, let found):
            return "partition \(n) holds no Linux root filesystem (found: \(found ?? "nothing recognisable"))"
        case .noLinuxPartition(let scheme, let count):
            return "no partition holds a Linux filesystem (ext2/3/4, xfs, btrfs, squashfs, erofs); table: \(scheme.rawValue), \(count) partition(s)"
        case .logicalVolume(let group, let volume, let e):
            return "root on logical volume \(group)/\(volume): \(e)"
        case .rootIsAFile(let partition, let file, let largest):
            return "the OS is the squashfs file \(file) on partition \(partition) (LibreELEC's layout), not a partition: a root "
                + "inside a file is not served" + (largest.map { "; --partition NAME=\($0) serves partition \($0), its data partition" } ?? "")
        }
    }
}

private func errnoText(_ e: Int32) -> String {
    "\(String(cString: strerror(e))) (errno \(e))"
}

func hex32(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
}
