import Glibc
import LinuxBlock
import Synchronization

/// A bounded LRU of O_PATH fds for passthrough nodes, so the layer never holds one fd per known inode
/// (RLIMIT_NOFILE can be as low as a few thousand for root without CAP_SYS_RESOURCE; images hold 100,000+ files). Misses reopen from the file handle.
/// Lock order: docs/ARCHITECTURE.md, "Locking".
final class HandleCache: Sendable {
    private struct Entry {
        let lease: FdLease
        let serial: UInt64
        var lastUse: UInt64
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var tick: UInt64 = 0
        /// Sandboxes being torn down: fds opened for them late are never cached.
        var dropped: Set<UInt64> = []
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) {
        self.capacity = max(capacity, 8)
    }

    var count: Int { state.withLock { $0.entries.count } }

    /// The cached fd for `id`, acquired (call `release` on the lease), or nil on a miss.
    func acquire(_ id: UInt64) -> (lease: FdLease, fd: Int32)? {
        state.withLock { s in
            guard var entry = s.entries[id] else { return nil }
            guard let fd = entry.lease.acquire() else {
                s.entries[id] = nil
                return nil
            }
            s.tick &+= 1
            entry.lastUse = s.tick
            s.entries[id] = entry
            return (entry.lease, fd)
        }
    }

    /// Caches a freshly opened fd and returns it acquired. If another thread cached the same node
    /// meanwhile, its fd is kept and ours goes with a private lease.
    func insert(_ id: UInt64, serial: UInt64, fd: consuming FileDescriptor) -> (lease: FdLease, fd: Int32) {
        let raw = fd.raw
        let lease = FdLease(fd)
        let acquired = lease.acquire() ?? raw
        var evicted: [FdLease] = []
        state.withLock { s in
            guard !s.dropped.contains(serial), s.entries[id] == nil else {
                lease.retire()
                return
            }
            s.tick &+= 1
            s.entries[id] = Entry(lease: lease, serial: serial, lastUse: s.tick)
            if s.entries.count > capacity {
                // Evict the least recently used eighth at once: amortised O(1) per insert.
                let victims = s.entries.sorted { $0.value.lastUse < $1.value.lastUse }.prefix(max(capacity / 8, 1))
                for (key, entry) in victims where key != id {
                    s.entries[key] = nil
                    evicted.append(entry.lease)
                }
            }
        }
        for old in evicted { old.retire() }
        return (lease, acquired)
    }

    /// A node was forgotten: its fd goes.
    func drop(_ id: UInt64) {
        let lease = state.withLock { $0.entries.removeValue(forKey: id)?.lease }
        lease?.retire()
    }

    /// Closes every cached fd of a sandbox and refuses to cache more until `restore`.
    func dropSandbox(_ serial: UInt64) {
        let leases: [FdLease] = state.withLock { s in
            s.dropped.insert(serial)
            let ids = s.entries.filter { $0.value.serial == serial }.map(\.key)
            return ids.compactMap { s.entries.removeValue(forKey: $0)?.lease }
        }
        for lease in leases { lease.retireAndWait() }
    }

    func restore(_ serial: UInt64) {
        _ = state.withLock { $0.dropped.remove(serial) }
    }
}
