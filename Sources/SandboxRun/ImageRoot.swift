import CLinux
import Glibc
import LinuxBlock

/// Paths inside the sandbox, resolved by the kernel as if the sandbox were "/" (RESOLVE_IN_ROOT): an
/// absolute or `..`-climbing symlink in the image stays inside it. `strict` also refuses every symlink
/// and any mount crossing: what a mount target must be, so a hostile image cannot aim a mount at a host path.
/// Owns the root's fd (a class: the checks that borrow it share one).
final class ImageRoot: Sendable {
    private let descriptor: FileDescriptor
    var fd: Int32 { descriptor.raw }

    init(_ descriptor: consuming FileDescriptor) {
        self.descriptor = descriptor
    }

    func open(_ path: String, flags: Int32, strict: Bool) throws(SystemError) -> FileDescriptor {
        var resolve = clinux_RESOLVE_IN_ROOT | clinux_RESOLVE_NO_MAGICLINKS
        if strict { resolve |= clinux_RESOLVE_NO_SYMLINKS | clinux_RESOLVE_NO_XDEV }
        let relative = String(path.drop { $0 == "/" })
        return FileDescriptor(adopting: try systemCall("openat2", "/" + relative) {
            clinux_openat2(fd, relative.isEmpty ? "." : relative, UInt64(UInt32(bitPattern: flags | O_CLOEXEC)), 0, resolve)
        })
    }

    /// The first `limit` bytes of a regular file in the image (symlinks followed inside the image), or nil.
    func read(_ path: String, limit: Int) -> [UInt8]? {
        guard let file = try? open(path, flags: O_RDONLY | O_NONBLOCK, strict: false) else { return nil }
        var info = stat()
        guard fstat(file.raw, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
        return Self.readAll(file, limit: limit)
    }

    static func readAll(_ file: borrowing FileDescriptor, limit: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: limit)
        var filled = 0
        while filled < limit {
            let count = bytes.withUnsafeMutableBytes { Glibc.read(file.raw, $0.baseAddress! + filled, limit - filled) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 { break }
            filled += count
        }
        return Array(bytes[0..<filled])
    }

    /// The kind of the entry at `path` itself (a trailing symlink is not followed), nil if absent or
    /// unreachable without following a symlink.
    func kind(_ path: String) -> mode_t? {
        guard let entry = try? open(path, flags: clinux_O_PATH | O_NOFOLLOW, strict: true) else { return nil }
        var info = stat()
        guard fstat(entry.raw, &info) == 0 else { return nil }
        return info.st_mode & S_IFMT
    }
}
