import CLinux
import Glibc
import LinuxBlock
import Logging
import Sandbox

/// mkdir/rmdir in `/IMAGE/sandboxes/` and shutdown teardown: attaching a sandbox's hidden mount to the
/// layer and detaching it so nothing here pins the mount when the provider unmounts it.
extension SandboxFileSystem {
    /// Attaches (once) the sandbox's hidden mount and returns its root, with one more lookup.
    func attach(_ ref: SandboxRef) throws -> (id: UInt64, attr: stat) {
        let (mount, mountID) = try ensureAttached(ref)
        return try mount.with(orErrno: ESTALE) { fd in try register(fd: fd, serial: ref.serial, mountID: mountID) }
    }

    /// The sandbox's root entry (with its partitions), made if the layer has none yet.
    func ensureAttached(_ ref: SandboxRef) throws -> (FdLease, Int32) {
        let attached: Bool = try state.withLock { s in
            guard let entry = s.sandboxes[ref.serial] else { return false }
            guard !entry.blocked else { throw SystemError("attach", "sandbox \(ref.image)/\(ref.name) is going away", errno: ESTALE) }
            return true
        }
        if !attached {
            let (lease, mountID) = try openMount(ref)
            let parts = attachPartitions(ref, rootMount: lease)
            let inserted = state.withLock { s in
                guard s.sandboxes[ref.serial] == nil else { return false }
                Self.insert(SandboxEntry(ref: ref, mount: lease, mountID: mountID), parts, &s)
                return true
            }
            if !inserted {
                lease.retire() // another request attached it first
                parts.retire()
            } else if ref.readOnly {
                schedulePristineCheck(ref.serial)
            }
        }
        return try state.withLock { s in
            guard let entry = s.sandboxes[ref.serial], !entry.blocked else {
                throw SystemError("attach", "sandbox \(ref.image)/\(ref.name) is going away", errno: ESTALE)
            }
            return (entry.mount, entry.mountID)
        }
    }

    /// Opens the hidden mount's root (a trusted path from the manager) and checks it supports file handles.
    func openMount(_ ref: SandboxRef) throws -> (FdLease, Int32) {
        // A real directory fd: open_by_handle_at refuses an O_PATH mount fd (EBADF).
        let fd = try systemCall("open", ref.mountPath) { open(ref.mountPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        var buffer = [UInt8](repeating: 0, count: 8 + Int(clinux_MAX_HANDLE_SZ))
        var mountID: Int32 = 0
        if clinux_name_to_handle_at(fd, "", &buffer, buffer.count, &mountID, clinux_AT_EMPTY_PATH) < 0 {
            let saved = errno
            close(fd)
            let error = SystemError("name_to_handle_at", ref.mountPath, errno: saved == EOPNOTSUPP ? EOPNOTSUPP : saved)
            logger.error("sandbox \(ref.image)/\(ref.name): its filesystem gives no file handles (overlayfs needs index=on,nfs_export=on): \(error)")
            throw error
        }
        return (FdLease(fd: fd), mountID)
    }

    func createSandbox(image: String, name: RawName) throws -> Reply {
        guard let text = name.string else {
            logger.warning("mkdir \(image)/sandboxes/\(name.display): the name is not UTF-8")
            throw SystemError("mkdir", "sandbox name \(name.display)", errno: EINVAL)
        }
        let ref: SandboxRef
        do {
            ref = try provider.createSandbox(image: image, name: text)
        } catch {
            // The provider wrote the one log line this failure gets; more here would only repeat it.
            logger.debug("mkdir \(image)/sandboxes/\(text) failed: \(error)")
            throw error
        }
        do {
            let root = try attach(ref)
            logger.info("sandbox \(image)/\(text) created", metadata: ["mount": "\(ref.mountPath)"])
            return .entry(id: root.id, attr: root.attr, attrTimeout: options.passthroughTimeout,
                          entryTimeout: options.virtualTimeout)
        } catch {
            logger.error("mkdir \(image)/sandboxes/\(text): attaching the sandbox failed, discarding it: \(error)")
            detach(serial: ref.serial)
            do {
                try provider.destroySandbox(image: image, name: text)
            } catch let destroyError {
                logger.error("discarding \(image)/\(text) after a failed attach also failed: \(destroyError)")
            }
            throw error
        }
    }

    func destroySandbox(image: String, name: RawName) throws -> Reply {
        guard let text = name.string, let ref = provider.sandbox(image: image, name: text) else {
            throw SystemError("rmdir", "\(image)/sandboxes/\(name.display)", errno: ENOENT)
        }
        // Phase 1: once no handle is open, block every new request in the sandbox. The kernel sends RELEASE
        // after close(2) has returned (behind reads in flight and the background queue), so handles the
        // caller already closed may still count: wait for their releases, bounded, before answering EBUSY.
        let serial = ref.serial
        let pending = state.withLock { $0.sandboxes[serial]?.openHandles ?? 0 }
        var waitStart = timespec()
        if pending > 0 {
            clock_gettime(CLOCK_MONOTONIC, &waitStart)
            hooks.rmdirWaits?()
        }
        let outcome: RmdirPhase1 = state.withLock(waitingUpTo: options.releaseWait,
                                                  until: { ($0.sandboxes[serial]?.openHandles ?? 0) == 0 }) { s, drained in
            guard var entry = s.sandboxes[serial] else {
                // Never attached: a blocked placeholder keeps lookups out while the provider works.
                let placeholder = FdLease(fd: -1)
                placeholder.retire()
                var entry = SandboxEntry(ref: ref, mount: placeholder, mountID: -1)
                entry.blocked = true
                s.sandboxes[serial] = entry
                return .proceed(nil, [])
            }
            guard !entry.blocked else { return .alreadyRemoving }
            guard drained else { return .busy(count: entry.openHandles, open: Self.openHandleNames(s, serial)) }
            entry.blocked = true
            s.sandboxes[serial] = entry
            return .proceed(entry.mount, Self.blockParts(&s, of: serial))
        }
        let mount: FdLease?
        let parts: [(serial: UInt64, lease: FdLease)]
        switch outcome {
        case .proceed(let lease, let blocked):
            mount = lease
            parts = blocked
            if pending > 0 {
                logger.debug("rmdir \(image)/sandboxes/\(text): \(pending) release(s) arrived after \(Self.seconds(since: waitStart)) s")
            }
        case .alreadyRemoving:
            logger.notice("rmdir \(image)/sandboxes/\(text) refused: another rmdir of it is in progress (EBUSY)")
            throw SystemError("rmdir", "\(image)/\(text) is already being removed", errno: EBUSY)
        case let .busy(count, open):
            logger.warning("rmdir \(image)/sandboxes/\(text) refused: \(count) handle(s) still open after waiting \(options.releaseWait) s for releases: \(open) (EBUSY)")
            throw SystemError("rmdir", "\(image)/\(text) has \(count) open file(s)", errno: EBUSY)
        }
        // Phase 2: wait out requests in flight (they hold the mount fd), then close every fd we keep there.
        mount?.retireAndWait()
        cache.dropSandbox(ref.serial)
        retireParts(parts)
        do {
            try provider.destroySandbox(image: image, name: text)
        } catch {
            logger.debug("rmdir \(image)/sandboxes/\(text) failed, the sandbox stays: \(error)")  // the provider logged it
            restore(ref, wasAttached: mount != nil && parts.isEmpty)
            throw error
        }
        let parent = state.withLock { s in
            Self.removeParts(&s, of: ref.serial)
            s.sandboxes[ref.serial] = nil
            s.brokenRoots.remove(s.table.pseudoInode(image, text))
            return s.table.sandboxesNode(image)
        }
        invalidateEntry(parent: parent, name: text)
        logger.info("sandbox \(image)/\(text) discarded")
        return .ok
    }

    private static func seconds(since start: timespec) -> String {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let milliseconds = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1_000_000
        return "\(Double(milliseconds) / 1000)"
    }

    /// What phase 1 of rmdir decided, under the state lock (logged and thrown outside it).
    private enum RmdirPhase1 {
        case proceed(FdLease?, [(serial: UInt64, lease: FdLease)])
        case alreadyRemoving
        case busy(count: Int, open: String)
    }

    /// The open handles of a sandbox for the EBUSY log line: "file inode N", at most 8 of them.
    private static func openHandleNames(_ s: FSState, _ serial: UInt64) -> String {
        var names: [String] = []
        for handle in s.handles.values {
            switch handle {
            case .file(let file) where s.owner(of: file.serial) == serial: names.append("file inode \(file.inode)")
            case .directory(let dir) where s.owner(of: dir.serial) == serial: names.append("directory inode \(dir.inode)")
            case .fat(let partition, let node, _) where s.owner(of: partition) == serial:
                names.append("FAT node \(node) of \(s.fats[partition]?.label ?? "a partition")")
            default: break
            }
        }
        // Handles the kernel released whose fds are still closing are counted but no longer listed.
        guard !names.isEmpty else { return "none listed (fds still closing)" }
        let shown = names.sorted().prefix(8).joined(separator: ", ")
        return names.count > 8 ? shown + " and \(names.count - 8) more" : shown
    }

    /// Undoes phase 1 and 2 of a failed rmdir: the sandbox is served again, unless its teardown stopped
    /// part-way. Then its mount may be gone and mountPath a bare directory under /run: it stays blocked
    /// for good (EIO) and only another rmdir, which retries the remaining steps, is let through.
    private func restore(_ ref: SandboxRef, wasAttached: Bool) {
        cache.restore(ref.serial)
        if provider.sandbox(image: ref.image, name: ref.name)?.broken ?? false {
            let parent = state.withLock { s in
                if var entry = s.sandboxes[ref.serial] {
                    entry.blocked = false
                    entry.broken = true
                    s.sandboxes[ref.serial] = entry
                }
                return s.table.sandboxesNode(ref.image)
            }
            // The kernel's entry still names the old root: make it look the name up again (broken root).
            invalidateEntry(parent: parent, name: ref.name)
            return
        }
        let reopened = wasAttached ? try? openMount(ref) : nil
        state.withLock { s in
            guard var entry = s.sandboxes[ref.serial] else { return }
            if let (lease, _) = reopened {
                entry.mount = lease
                entry.blocked = false
                s.sandboxes[ref.serial] = entry
            } else {
                // Nothing to reopen (or it failed, or it has partitions): the next lookup attaches afresh.
                Self.removeParts(&s, of: ref.serial)
                s.sandboxes[ref.serial] = nil
            }
        }
    }

    /// Drops a sandbox's attachment without asking the provider (failed attach).
    private func detach(serial: UInt64) {
        let (mount, parts) = state.withLock { s in
            let parts = Self.blockParts(&s, of: serial)
            Self.removeParts(&s, of: serial)
            return (s.sandboxes.removeValue(forKey: serial)?.mount, parts)
        }
        mount?.retireAndWait()
        cache.dropSandbox(serial)
        retireParts(parts)
    }

    /// Closes every fd this layer holds inside the sandbox and makes its nodes answer ESTALE; for teardown at
    /// shutdown, before the provider unmounts. Open files lose their fds (after requests in flight on them).
    public func forgetSandbox(serial: UInt64) {
        let found: (SandboxEntry, [OpenHandle], [(serial: UInt64, lease: FdLease)])? = state.withLock { s in
            guard var entry = s.sandboxes[serial] else { return nil }
            entry.blocked = true
            s.sandboxes[serial] = entry
            let parts = Self.blockParts(&s, of: serial)
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
                case .fat(let partition, _, _) where serials.contains(partition):
                    s.handles[fh] = nil
                default:
                    break
                }
            }
            return (entry, mine, parts)
        }
        guard let (entry, handles, parts) = found else { return }
        entry.mount.retireAndWait()
        cache.dropSandbox(serial)
        retireParts(parts)
        for handle in handles {
            switch handle {
            case .file(let file): file.lease.retire()
            case .directory(let dir): dir.close()
            case .virtualDirectory, .fat: break
            }
        }
        let parent = state.withLock { s in
            Self.removeParts(&s, of: serial)
            s.sandboxes[serial] = nil
            return s.table.sandboxesNode(entry.ref.image)
        }
        invalidateEntry(parent: parent, name: entry.ref.name)
        logger.info("sandbox \(entry.ref.image)/\(entry.ref.name) released by the FUSE layer")
    }
}
