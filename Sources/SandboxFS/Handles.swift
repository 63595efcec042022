import FATFS
import LinuxBlock

/// An open file or directory: fi->fh is its number in the Registry.
enum OpenHandle {
    case file(OpenFile)
    case directory(DirHandle)
    case virtualDirectory([VirtualEntry])
    case fat(FatHandle)
}

/// An open FAT file or directory.
struct FatHandle {
    /// The partition's serial (its FatEntry).
    let serial: UInt64
    let node: FATNodeID
    /// From the open flags.
    let writable: Bool
}

/// An fd the layer keeps in a sandbox's tree (a mount, a partition's gate or pin), retired when it goes.
struct HeldFD {
    /// The tree (root or partition) it belongs to: its cached fds go with it.
    let serial: UInt64
    let lease: FdLease
}

/// An open passthrough file: its fd, shared by the requests on it through the lease.
final class OpenFile: Sendable {
    let serial: UInt64
    /// The node ID the kernel opened.
    let node: UInt64
    /// st_ino as the caller sees it through FUSE (for the EBUSY log line: `find X -inum N` names it).
    let inode: UInt64
    let lease: FdLease
    /// The node whose I/O mode (BackingFiles) this open shares, released with it; nil without passthrough.
    let modeNode: UInt64?
    init(serial: UInt64, node: UInt64, inode: UInt64, lease: FdLease, modeNode: UInt64?) {
        self.serial = serial
        self.node = node
        self.inode = inode
        self.lease = lease
        self.modeNode = modeNode
    }
}
