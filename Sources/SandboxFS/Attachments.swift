import FATFS
import DiskImage
import LinuxBlock
import Sandbox

/// A hidden mount's root, opened by the layer: its directory fd and the kernel's mount ID (file handles
/// from another mount are refused).
struct HiddenMount {
    let lease: FdLease
    let id: Int32
}

/// A sandbox the layer has attached: its mount fd and who uses it.
struct SandboxEntry {
    let ref: SandboxRef
    /// Directory fd of the hidden mount's root; every passthrough request holds it for its duration.
    var mount: FdLease
    let mountID: Int32
    /// File and directory handles opened through FUSE whose fds are not closed yet: lowered only after the
    /// fd is closed, so at 0 nothing of them pins the hidden mount. rmdir waits for 0, else answers EBUSY.
    var openHandles = 0
    /// Set while rmdir tears the sandbox down: new requests get ESTALE.
    var blocked = false
    /// The sandbox (root serial) a partition's entry belongs to; its own serial for a root. Open handles are
    /// counted on the owner, so rmdir of the sandbox sees those of its partitions.
    var owner: UInt64
    /// A root's partitions (their serials), parents first.
    var parts: [UInt64] = []
    /// pristine/: used since the last idle check (see Pristine.swift).
    var used = true
    /// Its teardown stopped part-way (the provider says so): requests get EIO until an rmdir finishes it.
    var broken = false
    /// A partition's: an O_PATH fd of its mount point directory in the tree that holds it (see
    /// AttachedParts.pins), closed with the partition.
    var pin: FdLease? = nil

    init(ref: SandboxRef, mount: HiddenMount, owner: UInt64? = nil) {
        self.ref = ref
        self.mount = mount.lease
        self.mountID = mount.id
        self.owner = owner ?? ref.serial
    }

    var hiddenMount: HiddenMount { HiddenMount(lease: mount, id: mountID) }
}

/// A FAT partition of a sandbox or of pristine/, served from FATFS.
struct FatEntry {
    let volume: FATVolume
    /// Held by every request on the volume (fd -1: only a counter), so teardown waits for those in flight.
    let gate: FdLease
    let owner: UInt64
    let readOnly: Bool
    let label: String
    /// Owner and masks from the partition's fstab line (vfat's uid=, gid=, umask=, fmask=, dmask=).
    let ownership: FATMountOptions
    var blocked = false
    /// An O_PATH fd of its mount point directory (see AttachedParts.pins), closed with the partition.
    var pin: FdLease? = nil
}

/// What attaching a tree's partitions makes; put into the state together with the root entry, so no
/// lookup ever sees a mount point uncovered.
struct AttachedParts {
    var entries: [UInt64: SandboxEntry] = [:]
    var fats: [UInt64: FatEntry] = [:]
    /// Mount points are recognised by (dev, ino), and an overlay whose layers are on different filesystems
    /// (xino off) gives a directory a new st_ino each time its inode is evicted and read again (after
    /// drop_caches, under memory pressure): an O_PATH fd on each mount point keeps that inode, hence the
    /// key, for as long as the partition is attached.
    var covers: [InodeKey: UInt64] = [:]
    var order: [UInt64] = []

    func retire() {
        for entry in entries.values { entry.mount.retire() }
        for entry in entries.values { entry.pin?.retire() }
        for entry in fats.values { entry.pin?.retire() }
    }
}
