import Dispatch
import Glibc
import LinuxBlock
import Sandbox

/// `IMAGE/pristine/`: the image as it is, read-only (its hidden mounts are read-only, FAT volumes opened
/// read-only: every write gets EROFS). Attached at first use; released after a quiet period with nothing
/// open, and attached again (same serials, so the kernel's nodes stay valid) when used after that.
extension SandboxFileSystem {
    static let pristineDirName = "pristine"
    /// How long pristine/ stays attached with nothing open and no request.
    static let pristineLinger = 2.0

    /// Attaching pristine/ makes loop devices and kernel mounts of the untrusted image, and a compressed image is
    /// decompressed first: only root's requests start that (other users get EACCES); a view already attached
    /// is open to whoever may enter IMAGE/.
    func pristineLookup(_ image: String) throws -> Reply {
        let ref = try provider.pristine(image: image, mayAttach: RequestUID.isRoot)
        let root = try attach(ref)
        return .entry(id: root.id, attr: root.attr, attrTimeout: options.passthroughTimeout,
                      entryTimeout: options.virtualTimeout)
    }

    /// For a node of a released pristine view: attaches the view again. False for anything else.
    func reattachPristine(_ serial: UInt64) throws -> Bool {
        guard let image = state.withLock({ $0.pristine[serial] }) else { return false }
        // A release in progress finishes first (it broadcasts when done).
        state.withLock(waitingUpTo: 5, until: { s in
            !s.sandboxes.values.contains { $0.ref.readOnly && $0.ref.image == image && $0.blocked }
        }) { _, _ in }
        let ref = try provider.pristine(image: image, mayAttach: RequestUID.isRoot)
        _ = try ensureAttached(ref)
        return true
    }

    func schedulePristineCheck(_ serial: UInt64) {
        DispatchQueue.global().asyncAfter(deadline: .now() + Self.pristineLinger) { [weak self] in
            self?.pristineCheck(serial)
        }
    }

    /// Releases the view if nothing was open or asked of it since the last check; else looks again later.
    private func pristineCheck(_ serial: UInt64) {
        enum Decision { case gone, busy, release(FdLease, [(serial: UInt64, lease: FdLease)], String) }
        let decision: Decision = state.withLock { s in
            guard var root = s.sandboxes[serial], !root.blocked else { return .gone }
            guard root.openHandles == 0, !root.used else {
                root.used = false
                s.sandboxes[serial] = root
                return .busy
            }
            root.blocked = true
            s.sandboxes[serial] = root
            return .release(root.mount, Self.blockParts(&s, of: serial), root.ref.image)
        }
        switch decision {
        case .gone:
            return
        case .busy:
            schedulePristineCheck(serial)
        case .release(let mount, let parts, let image):
            mount.retireAndWait()
            cache.dropSandbox(serial)
            retireParts(parts)
            state.withLock { s in
                Self.removeParts(&s, of: serial)
                s.sandboxes[serial] = nil
            }
            state.broadcast()
            provider.releasePristine(image: image)
        }
    }

    /// At shutdown, before the provider releases them: closes what the layer holds in every pristine view.
    public func forgetPristine() {
        let roots = state.withLock { s in s.sandboxes.values.filter { $0.ref.readOnly && $0.owner == $0.ref.serial }.map(\.ref.serial) }
        for serial in roots { forgetSandbox(serial: serial) }
    }
}

extension FSState {
    /// A request on a pristine node: its view is in use (counted on the view's root entry).
    mutating func markUsed(_ serial: UInt64) {
        let owner = owner(of: serial)
        guard sandboxes[owner]?.used == false else { return }
        sandboxes[owner]?.used = true
    }
}
