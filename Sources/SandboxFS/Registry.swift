import Dispatch
import FATFS
import Glibc
import LinuxBlock
import Sandbox
import SandboxDiff
import Synchronization

/// What the FUSE layer knows: its nodes (NodeTable), the sandboxes, pristine views and partitions it has
/// attached, and the handles the kernel holds open. The only code that touches those maps; each method takes
/// the lock once, does one named thing and keeps the maps consistent with each other.
///
/// Never call the provider, fuse_reply_* or a blocking fd operation (retireAndWait) inside the lock: callers
/// get what to close back and close it after.
final class Registry: Sendable {
    private let state = Mutex(RegistryState())

    // MARK: Nodes

    /// What a node ID the kernel sent stands for; nil when unknown.
    func node(_ id: UInt64) -> NodeKind? {
        state.withLock { $0.table[id] }
    }

    func isBrokenRoot(_ id: UInt64) -> Bool {
        state.withLock { $0.brokenRoots.contains(id) }
    }

    /// The node of an inode just looked up in sandbox `key.serial`, its lookup count raised by one. Nil when
    /// the node table is full; ESTALE when the sandbox is not (or no longer) served.
    func lookUp(key: InodeKey, handle: FileHandleBytes, type: UInt32) throws -> UInt64? {
        try state.withLock { s in
            guard let sandbox = s.sandboxes[key.serial], !sandbox.blocked else {
                throw SystemError("lookup", "sandbox \(key.serial) discarded", errno: ESTALE)
            }
            return s.table.lookUp(key: key, handle: handle, type: type)
        }
    }

    /// Lowers a passthrough node's lookup count. `erased`: the node went; `overForgot`: it went below zero.
    func forget(_ id: UInt64, _ count: UInt64) -> (erased: Bool, overForgot: Bool) {
        state.withLock { s in
            let before = s.table.anomalies.overForgets
            return (s.table.forget(id, count), s.table.anomalies.overForgets != before)
        }
    }

    /// See NodeTable.shrinkIfSparse.
    func shrinkIfSparse() -> Bool {
        state.withLock { $0.table.shrinkIfSparse() }
    }

    var passNodeCount: Int { state.withLock { $0.table.passNodeCount } }

    func imageNodes(_ names: [String]) -> [UInt64] {
        state.withLock { s in names.map { s.table.imageNode($0) } }
    }

    func sandboxesNode(_ image: String) -> UInt64 {
        state.withLock { $0.table.sandboxesNode(image) }
    }

    func pseudoInodes(_ image: String, _ names: [String]) -> [UInt64] {
        state.withLock { s in names.map { s.table.pseudoInode(image, $0) } }
    }

    /// The node answered for a broken sandbox's root (no node behind it: requests on it get EIO).
    func brokenRoot(image: String, name: String) -> UInt64 {
        state.withLock { s in
            let id = s.table.pseudoInode(image, name)
            s.brokenRoots.insert(id)
            return id
        }
    }

    // MARK: Resolving a request's target

    /// A passthrough node and its sandbox for a request (nil while the sandbox is blocked or not attached).
    /// A pristine view's use is noted (it stays attached).
    func passTarget(_ id: UInt64) throws -> (node: PassNode, sandbox: SandboxEntry?) {
        try state.withLock { s in
            guard case .pass(let node)? = s.table[id] else {
                throw SystemError("resolve", "node \(id)", errno: ESTALE)
            }
            if s.sandboxes[node.serial]?.broken == true || s.sandboxes[s.owner(of: node.serial)]?.broken == true {
                throw SystemError("resolve", "node \(id) of a broken sandbox (rmdir it)", errno: EIO)
            }
            guard let sandbox = s.sandboxes[node.serial], !sandbox.blocked else { return (node, nil) }
            if sandbox.ref.readOnly { s.markUsed(node.serial) }
            return (node, sandbox)
        }
    }

    /// A FAT partition for a request; nil while it or its sandbox is blocked or not attached.
    func fatTarget(_ serial: UInt64) -> FatEntry? {
        state.withLock { s in
            guard let entry = s.fats[serial], !entry.blocked,
                  let owner = s.sandboxes[entry.owner], !owner.blocked else { return nil }
            if owner.ref.readOnly { s.markUsed(serial) }
            return entry
        }
    }

    func fatVolume(_ serial: UInt64) -> FATVolume? {
        state.withLock { $0.fats[serial]?.volume }
    }

    /// A partition by serial: a Linux one's mount, or whether it is FAT.
    func partition(_ serial: UInt64) -> (mount: HiddenMount?, isFat: Bool) {
        state.withLock { s in (s.sandboxes[serial]?.hiddenMount, s.fats[serial] != nil) }
    }

    /// The partition shown at this directory (a mount point), if any.
    func partition(covering key: InodeKey) -> UInt64? {
        state.withLock { $0.covers[key] }
    }

    /// The change journal of a passthrough node's sandbox (dm); nil for other nodes and engines.
    func journal(of id: UInt64) -> ChangeJournal? {
        state.withLock { s in
            guard case .pass(let node)? = s.table[id] else { return nil }
            return s.sandboxes[node.serial]?.ref.journal
        }
    }

    func baseUse(_ serial: UInt64) -> BaseUse? {
        state.withLock { $0.sandboxes[serial]?.ref.baseUse }
    }

    // MARK: Sandboxes

    /// Whether `ref` is attached; ESTALE while it is being removed.
    func isAttached(_ ref: SandboxRef) throws -> Bool {
        try state.withLock { s in
            guard let entry = s.sandboxes[ref.serial] else { return false }
            guard !entry.blocked else { throw SystemError("attach", "sandbox \(ref.image)/\(ref.name) is going away", errno: ESTALE) }
            return true
        }
    }

    /// Attaches a root with its partitions; false when another request attached it first.
    func attach(_ root: SandboxEntry, _ parts: AttachedParts) -> Bool {
        state.withLock { s in
            guard s.sandboxes[root.ref.serial] == nil else { return false }
            s.insert(root, parts)
            return true
        }
    }

    /// The mount fd of an attached sandbox and its mount ID; ESTALE when it is not served.
    func mount(of ref: SandboxRef) throws -> HiddenMount {
        try state.withLock { s in
            guard let entry = s.sandboxes[ref.serial], !entry.blocked else {
                throw SystemError("attach", "sandbox \(ref.image)/\(ref.name) is going away", errno: ESTALE)
            }
            return entry.hiddenMount
        }
    }

    func openHandleCount(_ serial: UInt64) -> Int {
        state.withLock { $0.sandboxes[serial]?.openHandles ?? 0 }
    }

    /// What rmdir's first phase decided.
    enum RmdirBlock {
        /// Blocked: the root's mount (nil: it was never attached) and its partitions' fds to retire.
        case proceed(FdLease?, [HeldFD])
        case alreadyRemoving
        case busy(count: Int, open: String)
    }

    /// rmdir's first phase: once no handle is open in the sandbox (waiting up to `timeout` for releases),
    /// blocks it and its partitions so every new request gets ESTALE.
    func blockForRemoval(_ ref: SandboxRef, waitingUpTo timeout: Double) -> RmdirBlock {
        let serial = ref.serial
        return withLock(waitingUpTo: timeout, until: { ($0.sandboxes[serial]?.openHandles ?? 0) == 0 }) { s, drained in
            guard var entry = s.sandboxes[serial] else {
                // Never attached: a blocked placeholder keeps lookups out while the provider works.
                let placeholder = FdLease(fd: -1)
                placeholder.retire()
                var entry = SandboxEntry(ref: ref, mount: HiddenMount(lease: placeholder, id: -1))
                entry.blocked = true
                s.sandboxes[serial] = entry
                return .proceed(nil, [])
            }
            guard !entry.blocked else { return .alreadyRemoving }
            guard drained else { return .busy(count: entry.openHandles, open: s.openHandleNames(serial)) }
            entry.blocked = true
            s.sandboxes[serial] = entry
            return .proceed(entry.mount, s.blockParts(of: serial))
        }
    }

    /// Blocks a root and its partitions and forgets them (a failed attach); returns the fds to retire.
    func detach(_ serial: UInt64) -> (mount: FdLease?, parts: [HeldFD]) {
        let detached = state.withLock { s in
            let parts = s.blockParts(of: serial)
            let mount = s.sandboxes[serial]?.mount
            s.remove(serial)
            return (mount, parts)
        }
        wakeWaiters()
        return detached
    }

    /// Forgets a root and its partitions, whose fds are closed already (and, after its rmdir, the node a
    /// broken root was answered with); returns its parent's node (the image's sandboxes/ directory) for
    /// invalidating its entry.
    func remove(_ ref: SandboxRef, discarded: Bool) -> UInt64 {
        let parent = state.withLock { s in
            s.remove(ref.serial)
            if discarded { s.brokenRoots.remove(s.table.pseudoInode(ref.image, ref.name)) }
            return s.table.sandboxesNode(ref.image)
        }
        wakeWaiters()
        return parent
    }

    /// Forgets a released pristine view and its partitions (their fds are closed already).
    func remove(_ serial: UInt64) {
        state.withLock { $0.remove(serial) }
        wakeWaiters()
    }

    /// A failed rmdir left the sandbox's teardown part-way: it stays blocked and answers EIO until an
    /// rmdir finishes it. Returns its parent's node.
    func markBroken(_ ref: SandboxRef) -> UInt64 {
        state.withLock { s in
            if var entry = s.sandboxes[ref.serial] {
                entry.blocked = false
                entry.broken = true
                s.sandboxes[ref.serial] = entry
            }
            return s.table.sandboxesNode(ref.image)
        }
    }

    /// A failed rmdir that left the sandbox whole: it is served again on `mount`, or (nil) forgotten so the
    /// next lookup attaches it afresh.
    func unblock(_ serial: UInt64, mount: FdLease?) {
        state.withLock { s in
            guard var entry = s.sandboxes[serial] else { return }
            if let mount {
                entry.mount = mount
                entry.blocked = false
                s.sandboxes[serial] = entry
            } else {
                s.remove(serial)
            }
        }
        wakeWaiters()
    }

    /// Shutdown: blocks a root and its partitions and takes the handles open in them out of the table.
    /// Returns the entry, the handles whose fds to close and the partitions' fds to retire.
    func takeForShutdown(_ serial: UInt64) -> (entry: SandboxEntry, handles: [OpenHandle], parts: [HeldFD])? {
        state.withLock { s in
            guard var entry = s.sandboxes[serial] else { return nil }
            entry.blocked = true
            s.sandboxes[serial] = entry
            let parts = s.blockParts(of: serial)
            let serials = Set([serial] + entry.parts)
            var mine: [OpenHandle] = []
            for (fh, handle) in s.handles {
                switch handle {
                case .file(let file) where serials.contains(file.serial):
                    mine.append(handle)
                    s.handles[fh] = nil
                case .directory(let dir) where serials.contains(dir.serial):
                    mine.append(handle)
                    s.handles[fh] = nil
                case .fat(let fat) where serials.contains(fat.serial):
                    s.handles[fh] = nil
                default:
                    break
                }
            }
            return (entry, mine, parts)
        }
    }

    // MARK: Pristine views

    /// The image of a pristine view's serial (root or partition), attached or released; nil for a sandbox's.
    func pristineImage(_ serial: UInt64) -> String? {
        state.withLock { $0.pristine[serial] }
    }

    /// Waits (up to `timeout` seconds) until no pristine view of `image` is being released.
    func waitForPristineRelease(_ image: String, timeout: Double) {
        withLock(waitingUpTo: timeout, until: { s in
            !s.sandboxes.values.contains { $0.ref.readOnly && $0.ref.image == image && $0.blocked }
        }) { _, _ in }
    }

    enum IdleCheck {
        case gone
        case busy
        /// Blocked for release: its mount and its partitions' fds to retire.
        case release(FdLease, [HeldFD], image: String)
    }

    /// Blocks a pristine view for release when nothing was open or asked of it since the last check;
    /// otherwise clears its use mark for the next check.
    func idleCheck(_ serial: UInt64) -> IdleCheck {
        state.withLock { s in
            guard var root = s.sandboxes[serial], !root.blocked else { return .gone }
            guard root.openHandles == 0, !root.used else {
                root.used = false
                s.sandboxes[serial] = root
                return .busy
            }
            root.blocked = true
            s.sandboxes[serial] = root
            return .release(root.mount, s.blockParts(of: serial), image: root.ref.image)
        }
    }

    /// The serials of every attached pristine view's root.
    func pristineRoots() -> [UInt64] {
        state.withLock { s in s.sandboxes.values.filter { $0.ref.readOnly && $0.owner == $0.ref.serial }.map(\.ref.serial) }
    }

    // MARK: Handles

    /// Adds an open handle, counted in `serial`'s sandbox (rmdir waits for it); nil when that is going away.
    func open(_ handle: OpenHandle, in serial: UInt64) -> UInt64? {
        state.withLock { s in s.addOpen(serial) ? s.addHandle(handle) : nil }
    }

    /// Adds a handle outside any sandbox (a virtual directory).
    func open(_ handle: OpenHandle) -> UInt64 {
        state.withLock { $0.addHandle(handle) }
    }

    func handle(_ fh: UInt64) -> OpenHandle? {
        state.withLock { $0.handles[fh] }
    }

    /// RELEASE: the handle leaves the table; its sandbox still counts it until `closed(in:)`.
    func removeHandle(_ fh: UInt64) -> OpenHandle? {
        state.withLock { $0.handles.removeValue(forKey: fh) }
    }

    /// A removed handle's fd is closed: its sandbox no longer counts it (an rmdir waiting for that wakes).
    func closed(in serial: UInt64) {
        state.withLock { $0.dropOpen(serial) }
        wakeWaiters()
    }

    /// The open files of a sandbox (tests).
    func files(in serial: UInt64) -> [OpenFile] {
        state.withLock { s in
            s.handles.values.compactMap { if case .file(let file) = $0, file.serial == serial { file } else { nil } }
        }
    }

    // MARK: Waiting for a change

    /// Waits (lock released meanwhile) until `ready` holds or `timeout` seconds have passed, then runs
    /// `body` under the lock, telling it whether `ready` held. Woken by `wakeWaiters`, never by polling.
    private func withLock<R: Sendable>(waitingUpTo timeout: Double, until ready: (RegistryState) -> Bool,
                                       _ body: (inout RegistryState, _ ready: Bool) -> R) -> R {
        let deadline = DispatchTime.now() + max(timeout, 0)
        while true {
            let wake = DispatchSemaphore(value: 0)
            let result: R? = state.withLock { s in
                let isReady = ready(s)
                if isReady || DispatchTime.now() >= deadline { return body(&s, isReady) }
                s.waiters.append(wake)
                return nil
            }
            if let result { return result }
            _ = wake.wait(timeout: deadline)
        }
    }

    private func wakeWaiters() {
        let waiters = state.withLock { s in
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.signal() }
    }
}
