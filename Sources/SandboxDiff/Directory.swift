import CLinux
import Glibc
import PrintableText

/// An open directory of a tree being compared or written. Every name below it is resolved relative to
/// this fd, one component at a time, never following a symlink: image content is untrusted.
public final class Directory {
    public let fd: Int32
    /// From the tree's root: "/" for the root, "/etc" below it.
    public let rawPath: [UInt8]

    public init(root: String) throws(DiffError) {
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw DiffError("open", Array(root.utf8), errno: errno) }
        self.fd = fd
        rawPath = [UInt8(ascii: "/")]
    }

    private init(fd: Int32, rawPath: [UInt8]) {
        self.fd = fd
        self.rawPath = rawPath
    }

    deinit { close(fd) }

    public func path(of name: [UInt8]) -> [UInt8] {
        rawPath == [UInt8(ascii: "/")] ? rawPath + name : rawPath + [UInt8(ascii: "/")] + name
    }

    /// The subdirectory `name`; throws ENOTDIR/ELOOP when it is not a directory (a symlink is not followed).
    public func child(_ name: [UInt8]) throws(DiffError) -> Directory {
        let fd = name.withCString { openat(self.fd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw DiffError("open", path(of: name), errno: errno) }
        return Directory(fd: fd, rawPath: path(of: name))
    }

    /// Entry names without `.` and `..`, in byte order.
    public func names() throws(DiffError) -> [[UInt8]] {
        var names: [[UInt8]] = []
        try forEachEntry { (name, _) throws(DiffError) in names.append(name) }
        return names.sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// Entry names (without `.` and `..`) with their inode numbers and whether each is a directory.
    public func namesWithInodes() throws(DiffError) -> [(name: [UInt8], inode: UInt64, isDirectory: Bool)] {
        var result: [(name: [UInt8], inode: UInt64, isDirectory: Bool)] = []
        try forEachEntry { (name, entry) throws(DiffError) in
            var isDirectory = entry.d_type == UInt8(DT_DIR)
            if entry.d_type == UInt8(DT_UNKNOWN) { isDirectory = try status(name).map { $0.st_mode & S_IFMT == S_IFDIR } ?? false }
            result.append((name, UInt64(entry.d_ino), isDirectory))
        }
        return result
    }

    /// Reads the directory from its start (through a dup of its fd), calling `body` with each entry's
    /// name and dirent, `.` and `..` left out.
    private func forEachEntry(_ body: ([UInt8], dirent) throws(DiffError) -> Void) throws(DiffError) {
        let copy = dup(fd)
        guard copy >= 0, let stream = fdopendir(copy) else {
            let saved = errno
            if copy >= 0 { close(copy) }
            throw DiffError("opendir", rawPath, errno: saved)
        }
        defer { closedir(stream) }
        rewinddir(stream)
        while true {
            errno = 0
            guard let entry = readdir(stream) else {
                if errno != 0 { throw DiffError("readdir", rawPath, errno: errno) }
                break
            }
            let name = withUnsafeBytes(of: &entry.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
            if name == [0x2e] || name == [0x2e, 0x2e] { continue }
            try body(name, entry.pointee)
        }
    }

    /// lstat of `name`; nil when there is no such entry.
    public func status(_ name: [UInt8]) throws(DiffError) -> stat? {
        var info = stat()
        // The empty name is this directory itself (the tree's root is compared too).
        if name.isEmpty {
            guard fstat(fd, &info) == 0 else { throw DiffError("fstat", rawPath, errno: errno) }
            return info
        }
        let rc = name.withCString { fstatat(fd, $0, &info, AT_SYMLINK_NOFOLLOW) }
        if rc == 0 { return info }
        if errno == ENOENT { return nil }
        throw DiffError("lstat", path(of: name), errno: errno)
    }

    /// Everything compared about an entry; nil when there is no such entry.
    public func entry(_ name: [UInt8]) throws(DiffError) -> Entry? {
        guard let info = try status(name) else { return nil }
        var entry = Entry(name: name, status: info)
        if entry.fileType == S_IFLNK { entry.linkTarget = try readLink(name) }
        entry.xattrs = try xattrs(name)
        return entry
    }

    public func readLink(_ name: [UInt8]) throws(DiffError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = name.withCString { cName in
            buffer.withUnsafeMutableBufferPointer { readlinkat(fd, cName, $0.baseAddress!, $0.count) }
        }
        guard count >= 0 else { throw DiffError("readlink", path(of: name), errno: errno) }
        return Array(buffer[..<count])
    }

    /// The entry through this fd's /proc link: the directory is the one we hold, and the l*xattr calls
    /// do not follow `name` if it is a symlink.
    public func procPath(_ name: [UInt8]) -> [UInt8] { Array("/proc/self/fd/\(fd)/".utf8) + name }

    /// Every xattr (names sorted), security.capability and system.posix_acl_* included.
    public func xattrs(_ name: [UInt8]) throws(DiffError) -> [Xattr] {
        let path = procPath(name)
        var list = [CChar]()
        while true {
            let size = path.withCString { clinux_llistxattr($0, nil, 0) }
            if size < 0, errno == ENOTSUP || errno == EOPNOTSUPP { return [] }
            guard size >= 0 else { throw DiffError("listxattr", self.path(of: name), errno: errno) }
            if size == 0 { return [] }
            list = [CChar](repeating: 0, count: size)
            let got = path.withCString { clinux_llistxattr($0, &list, size) }
            if got < 0, errno == ERANGE { continue }
            guard got >= 0 else { throw DiffError("listxattr", self.path(of: name), errno: errno) }
            list.removeLast(list.count - got)
            break
        }
        var result: [Xattr] = []
        for nameBytes in list.split(separator: 0, omittingEmptySubsequences: true) {
            let attribute = nameBytes.map { UInt8(bitPattern: $0) }
            result.append(Xattr(name: attribute, value: try xattrValue(path, attribute, entry: name)))
        }
        return result.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    private func xattrValue(_ path: [UInt8], _ attribute: [UInt8], entry: [UInt8]) throws(DiffError) -> [UInt8] {
        while true {
            let size = path.withCString { p in attribute.withCString { clinux_lgetxattr(p, $0, nil, 0) } }
            guard size >= 0 else { throw DiffError("getxattr \(PathText.escape(attribute))", self.path(of: entry), errno: errno) }
            var value = [UInt8](repeating: 0, count: size)
            let got = path.withCString { p in attribute.withCString { clinux_lgetxattr(p, $0, &value, size) } }
            if got < 0, errno == ERANGE { continue }
            guard got >= 0 else { throw DiffError("getxattr \(PathText.escape(attribute))", self.path(of: entry), errno: errno) }
            return Array(value[..<got])
        }
    }

    /// Opens a regular file below this directory for reading (never a symlink, fifo or device).
    public func openFile(_ name: [UInt8]) throws(DiffError) -> Int32 {
        let fd = name.withCString { openat(self.fd, $0, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC) }
        guard fd >= 0 else { throw DiffError("open", path(of: name), errno: errno) }
        return fd
    }
}

public struct Xattr: Sendable, Equatable {
    public let name: [UInt8]
    public let value: [UInt8]
}

/// What diff compares about one directory entry.
public struct Entry {
    public let name: [UInt8]
    public let status: stat
    public var linkTarget: [UInt8]?
    public var xattrs: [Xattr] = []

    public var fileType: mode_t { status.st_mode & S_IFMT }
}

extension Array where Element == UInt8 {
    /// Runs `body` with the bytes as a NUL-terminated C string.
    public func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        try (self + [0]).withUnsafeBufferPointer { buffer in
            try buffer.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
        }
    }
}
