import CFuse
import CLinux
import Dispatch
import Glibc
import LinuxBlock
import Synchronization

/// A readdirplus of a passthrough directory in three steps: read the entries whose records fit the kernel's
/// buffer, register them (each is a lookup the kernel counts), then write the reply. Registering is a
/// lookup on the hidden mount, which in a directory not in the kernel's caches reads and sets up every
/// inode: the caller waits for all of them and the lookups of one directory can run side by side, so they
/// are shared with helper threads (a cold `du -s` or `find` is bound by that CPU time).
extension SandboxFileSystem {
    func passReaddirPlus(_ req: fuse_req_t, _ handle: DirHandle, size: Int, offset: off_t) throws -> [UInt8] {
        try handle.withStream(at: offset) { dir, stream in
            let batch = try ReaddirBatch.read(req, handle, dir, &stream, size: size)
            let resolved = resolve(batch, dirFD: dirfd(dir), handle: handle)
            return write(req, batch, resolved, handle: handle)
        }
    }

    /// Registers every entry but . and .., on this thread and as many helpers as the batch is worth.
    private func resolve(_ batch: ReaddirBatch, dirFD: Int32, handle: DirHandle) -> [ResolvedEntry] {
        let count = batch.entries.count
        var resolved = [ResolvedEntry](repeating: .plain, count: count)
        resolved.withUnsafeMutableBufferPointer { out in
            batch.names.withUnsafeBufferPointer { names in
                let shared = ResolveBuffers(out: out, names: names.baseAddress!)
                let next = Atomic<Int>(0)
                // Each index is taken from `next` by exactly one thread, which alone writes its result.
                let work = { @Sendable in
                    while true {
                        let i = next.add(1, ordering: .relaxed).oldValue
                        guard i < count else { return }
                        shared.out[i] = self.resolveEntry(shared.names + batch.entries[i].nameAt, dirFD: dirFD, handle: handle)
                    }
                }
                let helpers = min(ReaddirLookupHelpers.count, count / ReaddirLookupHelpers.entriesPerThread)
                guard helpers > 0 else { return work() }
                let group = DispatchGroup()
                for _ in 0..<helpers { ReaddirLookupHelpers.queue.async(group: group, execute: work) }
                work()
                group.wait()
            }
        }
        return resolved
    }

    private func resolveEntry(_ name: UnsafePointer<CChar>, dirFD: Int32, handle: DirHandle) -> ResolvedEntry {
        if strcmp(name, ".") == 0 || strcmp(name, "..") == 0 { return .plain }
        let fd = openat(dirFD, name, clinux_O_PATH | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return .vanished }
        defer { close(fd) }
        // Not registrable (e.g. a submount): listed, and the kernel looks it up when it needs it.
        guard let node = try? register(fd: fd, serial: handle.serial, mountID: handle.mountID) else { return .plain }
        return .node(id: node.id, attr: node.attr)
    }

    private func write(_ req: fuse_req_t, _ batch: ReaddirBatch, _ resolved: [ResolvedEntry], handle: DirHandle) -> [UInt8] {
        // The records of the entries kept, sized as the batch was: the reply is exactly that long.
        let length = batch.entries.indices.reduce(0) { sum, i in
            if case .vanished = resolved[i] { return sum }
            return sum + batch.entries[i].recordSize
        }
        return [UInt8](unsafeUninitializedCapacity: length) { raw, initialized in
            var used = 0
            batch.names.withUnsafeBufferPointer { names in
                for (i, entry) in batch.entries.enumerated() {
                    var e = fuse_entry_param()
                    switch resolved[i] {
                    case .vanished:
                        continue
                    case .node(let id, let attr):
                        e.ino = id
                        e.attr = attr
                        e.attr_timeout = options.passthroughTimeout
                        e.entry_timeout = options.passthroughTimeout
                    case .plain:
                        e.attr.st_ino = numericCast(fuseInode(entry.ino, dev: handle.dev, serial: handle.serial))
                        e.attr.st_mode = entry.type << 12
                    }
                    guard let base = raw.baseAddress, entry.recordSize <= length - used else { break } // sized above
                    let out = UnsafeMutableRawPointer(base).advanced(by: used).assumingMemoryBound(to: CChar.self)
                    used += fuse_add_direntry_plus(req, out, length - used, names.baseAddress! + entry.nameAt, &e,
                                                   off_t(entry.next))
                }
            }
            initialized = used
        }
    }
}

/// What a readdirplus entry became: a registered node, an entry listed without one (. and .., or one that
/// cannot be registered), or one that vanished since the stream read it (left out).
private enum ResolvedEntry: Sendable {
    case node(id: UInt64, attr: stat)
    case plain
    case vanished
}

/// Directory entries read for one readdirplus reply, before they are registered.
private struct ReaddirBatch: Sendable {
    /// The names back to back, each NUL-terminated.
    var names: [CChar] = []
    var entries: [(nameAt: Int, recordSize: Int, next: Int64, type: UInt32, ino: UInt64)] = []

    /// The entries from the stream's position whose records fit in `size` bytes; the stream is left at the
    /// first that does not.
    static func read(_ req: fuse_req_t, _ handle: DirHandle, _ dir: OpaquePointer, _ stream: inout DirHandle.Stream,
                     size: Int) throws -> ReaddirBatch {
        var batch = ReaddirBatch()
        var used = 0
        while let entry = try handle.next(dir, first: batch.entries.isEmpty) {
            let nameAt = batch.names.count
            withUnsafePointer(to: &entry.pointee.d_name) { namePointer in
                namePointer.withMemoryRebound(to: CChar.self, capacity: 256) { name in
                    batch.names.append(contentsOf: UnsafeBufferPointer(start: name, count: strlen(name) + 1))
                }
            }
            // With no buffer, fuse_add_direntry_plus only sizes the record (it depends on the name alone).
            var unused = fuse_entry_param()
            let needed = batch.names.withUnsafeBufferPointer {
                fuse_add_direntry_plus(req, nil, 0, $0.baseAddress! + nameAt, &unused, 0)
            }
            if used + needed > size {
                batch.names.removeSubrange(nameAt...)
                DirHandle.unread(dir, stream)
                return batch
            }
            used += needed
            let next = Int64(entry.pointee.d_off)
            batch.entries.append((nameAt, needed, next, UInt32(entry.pointee.d_type), UInt64(entry.pointee.d_ino)))
            stream.offset = next
        }
        return batch
    }
}

/// The buffers resolve's threads share; each thread writes only the indices it took.
private struct ResolveBuffers: @unchecked Sendable {
    let out: UnsafeMutableBufferPointer<ResolvedEntry>
    let names: UnsafePointer<CChar>
}

/// Threads that help a readdirplus with its lookups: one fewer than the CPUs (the request's own thread is
/// the other), at most three, each only for a share of at least `entriesPerThread` entries (below that,
/// waking a helper costs more than it saves).
private enum ReaddirLookupHelpers {
    static let queue = DispatchQueue(label: "readdirplus lookups", attributes: .concurrent)
    static let count = max(0, min(3, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) - 1))
    static let entriesPerThread = 8
}
