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
        let mount = try ensureAttached(ref)
        return try mount.lease.with(orErrno: ESTALE) { fd in try register(fd: fd, serial: ref.serial, mountID: mount.id) }
    }

    /// The sandbox's root entry (with its partitions), made if the layer has none yet.
    func ensureAttached(_ ref: SandboxRef) throws -> HiddenMount {
        if try !registry.isAttached(ref) {
            let mount = try openMount(ref)
            let parts = attachPartitions(ref, rootMount: mount.lease)
            if !registry.attach(SandboxEntry(ref: ref, mount: mount), parts) {
                mount.lease.retire() // another request attached it first
                parts.retire()
            } else if ref.readOnly {
                schedulePristineCheck(ref.serial)
            }
        }
        return try registry.mount(of: ref)
    }

    /// Opens the hidden mount's root (a trusted path from the manager) and checks it supports file handles.
    func openMount(_ ref: SandboxRef) throws -> HiddenMount {
        // A real directory fd: open_by_handle_at refuses an O_PATH mount fd (EBADF).
        let fd = try FileDescriptor.open(ref.mountPath, O_RDONLY | O_DIRECTORY)
        var buffer = [UInt8](repeating: 0, count: 8 + Int(clinux_MAX_HANDLE_SZ))
        var mountID: Int32 = 0
        if clinux_name_to_handle_at(fd.raw, "", &buffer, buffer.count, &mountID, clinux_AT_EMPTY_PATH) < 0 {
            let saved = errno
            let error = SystemError("name_to_handle_at", ref.mountPath, errno: saved == EOPNOTSUPP ? EOPNOTSUPP : saved)
            logger.error("sandbox \(ref.image)/\(ref.name): its filesystem gives no file handles (overlayfs needs index=on,nfs_export=on): \(error)")
            throw error
        }
        return HiddenMount(lease: FdLease(fd), id: mountID)
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
        let pending = registry.openHandleCount(serial)
        var waitStart = timespec()
        if pending > 0 {
            clock_gettime(CLOCK_MONOTONIC, &waitStart)
            hooks.rmdirWaits?()
        }
        let outcome = registry.blockForRemoval(ref, waitingUpTo: options.releaseWait)
        let mount: FdLease?
        let parts: [HeldFD]
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
        let parent = registry.remove(ref, discarded: true)
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

    /// Undoes phase 1 and 2 of a failed rmdir: the sandbox is served again, unless its teardown stopped
    /// part-way. Then its mount may be gone and mountPath a bare directory under /run: it stays blocked
    /// for good (EIO) and only another rmdir, which retries the remaining steps, is let through.
    private func restore(_ ref: SandboxRef, wasAttached: Bool) {
        cache.restore(ref.serial)
        if provider.sandbox(image: ref.image, name: ref.name)?.broken ?? false {
            let parent = registry.markBroken(ref)
            // The kernel's entry still names the old root: make it look the name up again (broken root).
            invalidateEntry(parent: parent, name: ref.name)
            return
        }
        // Nothing to reopen (or it failed, or it has partitions): the next lookup attaches afresh.
        let reopened = wasAttached ? try? openMount(ref) : nil
        registry.unblock(ref.serial, mount: reopened?.lease)
    }

    /// Drops a sandbox's attachment without asking the provider (failed attach).
    private func detach(serial: UInt64) {
        let (mount, parts) = registry.detach(serial)
        mount?.retireAndWait()
        cache.dropSandbox(serial)
        retireParts(parts)
    }

    /// Closes every fd this layer holds inside the sandbox and makes its nodes answer ESTALE; for teardown at
    /// shutdown, before the provider unmounts. Open files lose their fds (after requests in flight on them).
    public func forgetSandbox(serial: UInt64) {
        guard let (entry, handles, parts) = registry.takeForShutdown(serial) else { return }
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
        let parent = registry.remove(entry.ref, discarded: false)
        invalidateEntry(parent: parent, name: entry.ref.name)
        logger.info("sandbox \(entry.ref.image)/\(entry.ref.name) released by the FUSE layer")
    }
}
