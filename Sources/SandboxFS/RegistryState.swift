import Dispatch
import Sandbox

/// The maps Registry guards, with the invariants that tie them together. Only Registry touches it, always
/// under its lock.
struct RegistryState {
    var table = NodeTable()
    /// Attached sandboxes, pristine views and their Linux partitions, by serial.
    var sandboxes: [UInt64: SandboxEntry] = [:]
    /// FAT partitions by serial.
    var fats: [UInt64: FatEntry] = [:]
    var handles: [UInt64: OpenHandle] = [:]
    var nextHandle: UInt64 = 1
    /// Mount point directories: (tree serial, dev, ino) of the directory -> the partition serial shown there.
    var covers: [InodeKey: UInt64] = [:]
    /// Pristine views by root serial -> image; their parts' serials -> the image too.
    var pristine: [UInt64: String] = [:]
    /// Node IDs answered for the roots of broken sandboxes: no node behind them, every request gets EIO.
    var brokenRoots: Set<UInt64> = []
    /// Threads waiting for a change (Registry.withLock(waitingUpTo:)), woken after handles close and
    /// sandboxes go.
    var waiters: [DispatchSemaphore] = []

    /// The sandbox a serial (a root's or a partition's) belongs to.
    func owner(of serial: UInt64) -> UInt64 {
        sandboxes[serial]?.owner ?? fats[serial]?.owner ?? serial
    }

    /// One more open handle in `serial`'s sandbox (counted on its owner); false when it is going away.
    mutating func addOpen(_ serial: UInt64) -> Bool {
        let owner = owner(of: serial)
        guard var root = sandboxes[owner], !root.blocked, sandboxes[serial]?.blocked != true,
              fats[serial]?.blocked != true else { return false }
        root.openHandles += 1
        sandboxes[owner] = root
        return true
    }

    mutating func dropOpen(_ serial: UInt64) {
        let owner = owner(of: serial)
        guard var root = sandboxes[owner] else { return }
        root.openHandles = max(root.openHandles - 1, 0)
        sandboxes[owner] = root
    }

    mutating func addHandle(_ handle: OpenHandle) -> UInt64 {
        let fh = nextHandle
        nextHandle &+= 1
        handles[fh] = handle
        return fh
    }

    /// A request on a pristine node: its view is in use (counted on the view's root entry).
    mutating func markUsed(_ serial: UInt64) {
        let owner = owner(of: serial)
        guard sandboxes[owner]?.used == false else { return }
        sandboxes[owner]?.used = true
    }

    /// The new root entry with its partitions, all at once: no lookup ever sees a mount point uncovered.
    mutating func insert(_ root: SandboxEntry, _ parts: AttachedParts) {
        var root = root
        root.parts = parts.order
        sandboxes[root.ref.serial] = root
        for (serial, entry) in parts.entries { sandboxes[serial] = entry }
        for (serial, entry) in parts.fats { fats[serial] = entry }
        for (key, serial) in parts.covers { covers[key] = serial }
        if root.ref.readOnly {
            pristine[root.ref.serial] = root.ref.image
            for serial in parts.order { pristine[serial] = root.ref.image }
        }
    }

    /// When a root entry is blocked: blocks its partitions and returns the fds to retire.
    mutating func blockParts(of root: UInt64) -> [HeldFD] {
        var out: [HeldFD] = []
        for serial in sandboxes[root]?.parts ?? [] {
            if var entry = sandboxes[serial] {
                entry.blocked = true
                sandboxes[serial] = entry
                out.append(HeldFD(serial: serial, lease: entry.mount))
                if let pin = entry.pin { out.append(HeldFD(serial: serial, lease: pin)) }
            }
            if var entry = fats[serial] {
                entry.blocked = true
                fats[serial] = entry
                out.append(HeldFD(serial: serial, lease: entry.gate))
                if let pin = entry.pin { out.append(HeldFD(serial: serial, lease: pin)) }
            }
        }
        return out
    }

    /// Forgets a root's entry, its partitions' entries and their mount point records.
    mutating func remove(_ root: UInt64) {
        let parts = Set(sandboxes[root]?.parts ?? [])
        for serial in parts {
            sandboxes[serial] = nil
            fats[serial] = nil
        }
        covers = covers.filter { !parts.contains($0.value) }
        sandboxes[root] = nil
    }

    /// The open handles of a sandbox for the EBUSY log line: "file inode N", at most 8 of them.
    func openHandleNames(_ serial: UInt64) -> String {
        var names: [String] = []
        for handle in handles.values {
            switch handle {
            case .file(let file) where owner(of: file.serial) == serial: names.append("file inode \(file.inode)")
            case .directory(let dir) where owner(of: dir.serial) == serial: names.append("directory inode \(dir.inode)")
            case .fat(let fat) where owner(of: fat.serial) == serial:
                names.append("FAT node \(fat.node) of \(fats[fat.serial]?.label ?? "a partition")")
            default: break
            }
        }
        // Handles the kernel released whose fds are still closing are counted but no longer listed.
        guard !names.isEmpty else { return "none listed (fds still closing)" }
        let shown = names.sorted().prefix(8).joined(separator: ", ")
        return names.count > 8 ? shown + " and \(names.count - 8) more" : shown
    }
}
