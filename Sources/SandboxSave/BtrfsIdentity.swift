import Glibc
import LinuxBlock

/// A btrfs's identity as its superblocks hold it: the fsid, the metadata_uuid and the METADATA_UUID incompat bit.
/// Before Linux 6.7 (temp-fsid) btrfs refuses to mount a device whose fsid is already mounted (EEXIST), and the
/// image's own copy is (pristine/, diff's copy). So save mounts the output's copy after `btrfstune -m` (a new fsid
/// in the superblocks only; the tree blocks keep theirs as metadata_uuid) and, once it is unmounted, puts this
/// identity back into every superblock copy: the saved image keeps the UUID its fstab and boot files name.
/// btrfstune cannot do that last step while the image's copy is visible (it refuses an fsid that is not unique).
public struct BtrfsIdentity: Equatable, Sendable {
    public let fsid: [UInt8]
    public let metadataUUID: [UInt8]
    public let hasMetadataUUID: Bool

    /// Where btrfs keeps its superblock and its copies (64 KiB, 64 MiB, 256 GiB), each 4 KiB.
    static let superblockOffsets: [UInt64] = [64 << 10, 64 << 20, 256 << 30]
    static let superblockSize = 4096
    static let magic = Array("_BHRfS_M".utf8)
    static let metadataUUIDFlag: UInt64 = 1 << 10
    /// Offsets inside a superblock (struct btrfs_super_block).
    enum Field {
        static let csum = 0x00, fsid = 0x20, bytenr = 0x30, magic = 0x40, incompat = 0xBC, csumType = 0xC4
        static let metadataUUID = 0x23B
    }

    /// The identity in the primary superblock of the btrfs on `device` (or in a file). Refuses (ENOTSUP) a checksum other than
    /// crc32c (mkfs's default): its superblocks could not be written back.
    public static func read(device: String) throws(SaveError) -> BtrfsIdentity {
        let fd = try open(device, O_RDONLY)
        defer { close(fd) }
        let block = try superblock(fd, device, at: superblockOffsets[0])
        guard let block else { throw SaveError("\(device) holds no btrfs superblock at 64 KiB", errno: EINVAL) }
        return BtrfsIdentity(fsid: Array(block[Field.fsid..<Field.fsid + 16]),
                             metadataUUID: Array(block[Field.metadataUUID..<Field.metadataUUID + 16]),
                             hasMetadataUUID: incompat(block) & metadataUUIDFlag != 0)
    }

    /// Writes this identity into every superblock copy on `device` (an unmounted device or a file) and flushes it.
    public func write(device: String) throws(SaveError) {
        let fd = try Self.open(device, O_RDWR | O_EXCL)
        defer { close(fd) }
        let end = lseek(fd, 0, SEEK_END)  // a block device's size, or a file's
        guard end >= 0 else { throw SaveError("lseek \(device)", errno: errno) }
        let size = UInt64(end)
        var written = 0
        for offset in Self.superblockOffsets where offset + UInt64(Self.superblockSize) <= size {
            // A copy past the filesystem's end (mkfs writes only those that fit) is absent: nothing to change.
            guard var block = try Self.superblock(fd, device, at: offset) else { continue }
            block.replaceSubrange(Field.fsid..<Field.fsid + 16, with: fsid)
            block.replaceSubrange(Field.metadataUUID..<Field.metadataUUID + 16, with: metadataUUID)
            let flags = Self.incompat(block) & ~Self.metadataUUIDFlag | (hasMetadataUUID ? Self.metadataUUIDFlag : 0)
            withUnsafeBytes(of: flags.littleEndian) { block.replaceSubrange(Field.incompat..<Field.incompat + 8, with: $0) }
            let sum = CRC32C.checksum(block[32...])
            block.replaceSubrange(0..<32, with: [UInt8](repeating: 0, count: 32))
            withUnsafeBytes(of: sum.littleEndian) { block.replaceSubrange(0..<4, with: $0) }
            let count = block.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard count == Self.superblockSize else {
                throw SaveError("write the btrfs superblock at \(offset) of \(device)", errno: count < 0 ? errno : EIO)
            }
            written += 1
        }
        guard written > 0 else { throw SaveError("\(device) holds no btrfs superblock to write", errno: EINVAL) }
        guard fsync(fd) == 0 else { throw SaveError("fsync \(device)", errno: errno) }
    }

    private static func open(_ device: String, _ flags: Int32) throws(SaveError) -> Int32 {
        let fd = Glibc.open(device, flags | O_CLOEXEC)
        guard fd >= 0 else { throw SaveError("open \(device)", errno: errno) }
        return fd
    }

    /// The superblock at `offset`, checked (magic, its own offset, crc32c); nil when none is there.
    private static func superblock(_ fd: Int32, _ device: String, at offset: UInt64) throws(SaveError) -> [UInt8]? {
        var block = [UInt8](repeating: 0, count: superblockSize)
        let count = block.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard count >= 0 else { throw SaveError("read \(device) at \(offset)", errno: errno) }
        guard count == superblockSize, Array(block[Field.magic..<Field.magic + 8]) == magic,
              load(block, Field.bytenr) == offset else { return nil }
        let type = UInt16(block[Field.csumType]) | UInt16(block[Field.csumType + 1]) << 8
        guard type == 0 else {
            throw SaveError("the btrfs on \(device) has checksum type \(type); only crc32c superblocks can be rewritten", errno: ENOTSUP)
        }
        guard UInt32(truncatingIfNeeded: load(block, Field.csum)) == CRC32C.checksum(block[32...]) else {
            throw SaveError("the btrfs superblock at \(offset) of \(device) fails its checksum", errno: EIO)
        }
        return block
    }

    private static func incompat(_ block: [UInt8]) -> UInt64 { load(block, Field.incompat) }

    private static func load(_ block: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(block[at + $1]) << (8 * $1) }
    }
}

/// CRC-32C (Castagnoli), as btrfs checksums its superblocks.
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { byte in
        (0..<8).reduce(UInt32(byte)) { crc, _ in crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    }

    static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        ~bytes.reduce(~UInt32(0)) { crc, byte in table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
    }
}
