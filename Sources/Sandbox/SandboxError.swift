import DiskImage
import Glibc
import ImageCache
import LinuxBlock
import PrintableText

/// Errors a caller of the manager can meet; each carries the errno returned to the FUSE caller.
public enum SandboxError: Error, ErrnoCarrying, CustomStringConvertible {
    case noSuchImage(String)
    case invalidName(String, SandboxName.Problem)
    case exists(image: String, sandbox: String)
    case noSuchSandbox(image: String, sandbox: String)
    case unusableImage(String, DiskImageError)
    /// A kernel step failed; `step` says which ("attach loop device", "mount snapshot", ...).
    case stepFailed(step: String, underlying: any Error)
    case shuttingDown
    /// A diff or save is reading the sandbox.
    case inUse(image: String, sandbox: String)
    case unsupported(String)
    /// Only root may start this (attaching pristine/, decompressing an image).
    case rootOnly(String)

    public var errno: Int32 {
        switch self {
        case .noSuchImage, .noSuchSandbox: ENOENT
        case .invalidName: EINVAL
        case .exists: EEXIST
        case .unusableImage(_, let error): error.errno
        case .stepFailed(_, let underlying): (underlying as? any ErrnoCarrying)?.errno ?? EIO
        case .shuttingDown: ESHUTDOWN
        case .inUse: EBUSY
        case .unsupported: EOPNOTSUPP
        case .rootOnly: EACCES
        }
    }

    public var description: String {
        switch self {
        case .noSuchImage(let image): "no image \(PathText.escape(image)).img"
        case .invalidName(let name, let problem): "invalid sandbox name \"\(PathText.escape(name))\": \(problem)"
        case .exists(let image, let sandbox): "sandbox \(PathText.escape(image))/\(PathText.escape(sandbox)) already exists"
        case .noSuchSandbox(let image, let sandbox): "no sandbox \(PathText.escape(image))/\(PathText.escape(sandbox))"
        case .unusableImage(let image, let error): "image \(PathText.escape(image)).img: \(error)"
        case .stepFailed(let step, let underlying): "\(step): \(underlying)"
        case .shuttingDown: "the daemon is shutting down"
        case .inUse(let image, let sandbox): "sandbox \(PathText.escape(image))/\(PathText.escape(sandbox)) is in use by a diff or save"
        case .unsupported(let what): what
        case .rootOnly(let what): "\(what): only root's requests start it"
        }
    }
}

/// Wraps any error thrown by `body` with the name of the step, so one log line can say what failed.
func step<T>(_ name: String, _ body: () throws -> T) throws(SandboxError) -> T {
    do {
        return try body()
    } catch let error as SandboxError {
        throw error
    } catch {
        throw .stepFailed(step: name, underlying: error)
    }
}

extension SystemError: ErrnoCarrying {}
extension DiskImageError: ErrnoCarrying {}
extension CacheError: ErrnoCarrying {}
extension CommandError: ErrnoCarrying {
    public var errno: Int32 { EIO }
}

extension SandboxError {
    /// `step` for the targets above this one (save).
    public static func wrapping<T>(_ name: String, _ body: () throws -> T) throws(SandboxError) -> T { try step(name, body) }
}
