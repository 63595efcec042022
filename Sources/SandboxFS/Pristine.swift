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
        guard let image = registry.pristineImage(serial) else { return false }
        // A release in progress finishes first (it wakes waiters when done).
        registry.waitForPristineRelease(image, timeout: 5)
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
        switch registry.idleCheck(serial) {
        case .gone:
            return
        case .busy:
            schedulePristineCheck(serial)
        case .release(let mount, let parts, let image):
            mount.retireAndWait()
            cache.dropSandbox(serial)
            retireParts(parts)
            registry.remove(serial)
            provider.releasePristine(image: image)
        }
    }

    /// At shutdown, before the provider releases them: closes what the layer holds in every pristine view.
    public func forgetPristine() {
        for serial in registry.pristineRoots() { forgetSandbox(serial: serial) }
    }
}
