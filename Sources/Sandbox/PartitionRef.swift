import DiskImage
import FATFS
import SandboxDiff

/// A partition shown below the root of a sandbox or of `pristine/`, at its fstab mount point.
public struct PartitionRef: Sendable, Hashable {
    public let mount: PartitionMount
    /// Unique for the life of the serve process, like a sandbox's: the FUSE layer's identity for its inodes.
    /// A pristine view's partitions keep theirs across re-attaches.
    public let serial: UInt64
    public let content: PartitionContent
    /// A mounted partition's change journal (dm), as the root's (SandboxRef.journal).
    public let journal: ChangeJournal?

    public init(mount: PartitionMount, serial: UInt64, content: PartitionContent, journal: ChangeJournal? = nil) {
        self.mount = mount
        self.serial = serial
        self.content = content
        self.journal = journal
    }

    public static func == (a: PartitionRef, b: PartitionRef) -> Bool { a.serial == b.serial }
    public func hash(into hasher: inout Hasher) { hasher.combine(serial) }
}

public enum PartitionContent: Sendable {
    /// ext2/3/4, xfs, btrfs: a hidden kernel mount (a second overlay or snapshot; read-only for pristine).
    case mounted(path: String)
    /// FAT: served by the daemon itself from FATFS (over a block COW in a sandbox, the image in pristine).
    case fat(FATVolume, cow: COWOverlay?)
}
