import Foundation
import Glibc
import Sandbox
import SandboxDiff
import Synchronization

struct FakeError: ErrnoCarrying, CustomStringConvertible {
    let errno: Int32
    var description: String { "fake provider error \(errno)" }
}

/// A directory-backed SandboxProvider: images are names, a sandbox is a fresh directory under `base`.
final class FakeProvider: SandboxProvider, Sendable {
    /// How a sandbox's mountPath is made.
    enum Backing: Sendable {
        case directory
        /// An overlayfs mount (lower = an empty dir); handles only with index=on,nfs_export=on.
        case overlay(nfsExport: Bool)
    }

    struct State {
        var images: [String: [String: SandboxRef]] = [:]
        var nextSerial: UInt64 = 1
        var failDestroy: Int32? = nil
        /// The next destroy gets as far as removing what the mount held, then fails: the sandbox is broken.
        var failDestroyPartway = false
        /// Runs at the start of each create, outside the lock (a slow preparation).
        var beforeCreate: (@Sendable () -> Void)? = nil
    }

    let base: String
    let backing: Backing
    /// Sandboxes get a change journal, as on the dm engine.
    let journaled: Bool
    let state = Mutex(State())

    init(base: String, images: [String], backing: Backing = .directory, journaled: Bool = false) {
        self.base = base
        self.backing = backing
        self.journaled = journaled
        state.withLock { s in for image in images { s.images[image] = [:] } }
    }

    func setFailDestroy(_ code: Int32?) { state.withLock { $0.failDestroy = code } }
    func setFailDestroyPartway() { state.withLock { $0.failDestroyPartway = true } }
    func setBeforeCreate(_ body: @escaping @Sendable () -> Void) { state.withLock { $0.beforeCreate = body } }

    func imageNames() -> [String] { state.withLock { Array($0.images.keys) } }

    func sandboxNames(image: String) -> [String]? { state.withLock { $0.images[image].map { Array($0.keys) } } }

    func sandbox(image: String, name: String) -> SandboxRef? { state.withLock { $0.images[image]?[name] } }

    func createSandbox(image: String, name: String) throws -> SandboxRef {
        state.withLock { $0.beforeCreate }?()
        return try state.withLock { s in
            guard s.images[image] != nil else { throw FakeError(errno: ENOENT) }
            guard s.images[image]?[name] == nil else { throw FakeError(errno: EEXIST) }
            let serial = s.nextSerial
            s.nextSerial += 1
            let path = "\(base)/\(image)-\(name)-\(serial)"
            guard mkdir(path, 0o755) == 0 else { throw FakeError(errno: errno) }
            if case .overlay(let nfsExport) = backing {
                for part in ["lower", "upper", "work"] {
                    guard mkdir(path + "." + part, 0o755) == 0 else { throw FakeError(errno: errno) }
                }
                var options = "lowerdir=\(path).lower,upperdir=\(path).upper,workdir=\(path).work"
                if nfsExport { options += ",index=on,nfs_export=on" }
                guard mount("overlay", path, "overlay", 0, options) == 0 else { throw FakeError(errno: errno) }
            }
            let ref = SandboxRef(image: image, name: name, serial: serial, mountPath: path,
                                 journal: journaled ? ChangeJournal(mountPath: path) : nil)
            s.images[image]?[name] = ref
            return ref
        }
    }

    func destroySandbox(image: String, name: String) throws {
        try state.withLock { s in
            if let code = s.failDestroy { throw FakeError(errno: code) }
            guard let ref = s.images[image]?[name] else { throw FakeError(errno: ENOENT) }
            if s.failDestroyPartway {
                // Like the manager after the unmount step succeeded and the next one failed: mountPath is
                // a bare directory now, and the sandbox is listed as broken.
                s.failDestroyPartway = false
                try remove(ref)
                guard mkdir(ref.mountPath, 0o755) == 0 else { throw FakeError(errno: errno) }
                s.images[image]?[name]?.broken = true
                throw FakeError(errno: EBUSY)
            }
            try remove(ref)
            s.images[image]?[name] = nil
        }
    }

    /// No pristine view here: the manager's is tested through the daemon (WholeImageSuite).
    func pristine(image: String, mayAttach: Bool) throws -> SandboxRef { throw FakeError(errno: ENOENT) }
    func releasePristine(image: String) {}

    private func remove(_ ref: SandboxRef) throws {
        if case .overlay = backing {
            // Not detached: EBUSY here means the FUSE layer still holds an fd inside.
            guard umount2(ref.mountPath, 0) == 0 else { throw FakeError(errno: errno) }
            for part in ["lower", "upper", "work"] { try? FileManager.default.removeItem(atPath: ref.mountPath + "." + part) }
        }
        try FileManager.default.removeItem(atPath: ref.mountPath)
    }

    /// Test cleanup: whatever is left, unmounted lazily so a failed test leaves no mount behind.
    func discardAll() {
        let refs = state.withLock { s in
            defer { for image in s.images.keys { s.images[image] = [:] } }
            return s.images.values.flatMap(\.values)
        }
        for ref in refs {
            if case .overlay = backing { _ = umount2(ref.mountPath, Int32(MNT_DETACH)) }
        }
    }
}
