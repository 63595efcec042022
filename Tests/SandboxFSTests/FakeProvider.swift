import Foundation
import Glibc
import Sandbox
import Synchronization

struct FakeError: ErrnoCarrying, CustomStringConvertible {
    let errno: Int32
    var description: String { "fake provider error \(errno)" }
}

/// A directory-backed SandboxProvider: images are names, a sandbox is a fresh directory under `base`.
final class FakeProvider: SandboxProvider, Sendable {
    struct State {
        var images: [String: [String: SandboxRef]] = [:]
        var nextSerial: UInt64 = 1
        var failDestroy: Int32? = nil
    }

    let base: String
    let state = Mutex(State())

    init(base: String, images: [String]) {
        self.base = base
        state.withLock { s in for image in images { s.images[image] = [:] } }
    }

    func setFailDestroy(_ code: Int32?) { state.withLock { $0.failDestroy = code } }

    func imageNames() -> [String] { state.withLock { Array($0.images.keys) } }

    func sandboxNames(image: String) -> [String]? { state.withLock { $0.images[image].map { Array($0.keys) } } }

    func sandbox(image: String, name: String) -> SandboxRef? { state.withLock { $0.images[image]?[name] } }

    func createSandbox(image: String, name: String) throws -> SandboxRef {
        try state.withLock { s in
            guard s.images[image] != nil else { throw FakeError(errno: ENOENT) }
            guard s.images[image]?[name] == nil else { throw FakeError(errno: EEXIST) }
            let serial = s.nextSerial
            s.nextSerial += 1
            let path = "\(base)/\(image)-\(name)-\(serial)"
            guard mkdir(path, 0o755) == 0 else { throw FakeError(errno: errno) }
            let ref = SandboxRef(image: image, name: name, serial: serial, mountPath: path)
            s.images[image]?[name] = ref
            return ref
        }
    }

    func destroySandbox(image: String, name: String) throws {
        try state.withLock { s in
            if let code = s.failDestroy { throw FakeError(errno: code) }
            guard let ref = s.images[image]?[name] else { throw FakeError(errno: ENOENT) }
            try FileManager.default.removeItem(atPath: ref.mountPath)
            s.images[image]?[name] = nil
        }
    }
}
