import Synchronization

/// The st_ino values a sandbox's inodes show through FUSE. Under one hidden mount, inodes of different
/// filesystems share numbers: an overlay's directories carry the overlay's st_dev while its files carry the
/// layer's, and inode 12 of the lower image and of the upper store are different files. FUSE shows one
/// st_dev for everything, so the number must tell them apart: tools such as `cp -a` and `tar` take equal
/// (st_dev, st_ino) for hard links. Each (sandbox, st_dev) gets a small index, in order of first sight,
/// kept for the life of the daemon (a sandbox has a few filesystems; serials are not reused).
final class InodeNumbers: Sendable {
    /// Per sandbox serial: st_dev -> index.
    private let indexes = Mutex([UInt64: [UInt64: UInt64]]())

    /// Bits 40-47 hold the device index, 48-62 the sandbox serial (the top bit marks the virtual tree's
    /// and FAT's numbers): ext4, xfs and btrfs inode numbers of images stay well under 2^40.
    func number(ino: UInt64, dev: UInt64, serial: UInt64) -> UInt64 {
        let index = indexes.withLock { table in
            if let index = table[serial]?[dev] { return index }
            let next = UInt64(table[serial]?.count ?? 0)
            table[serial, default: [:]][dev] = next
            return next
        }
        return (ino ^ ((index & 0xff) << 40) ^ (serial << 48)) & ~(UInt64(1) << 63)
    }
}
