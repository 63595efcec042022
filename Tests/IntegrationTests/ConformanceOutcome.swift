import Foundation
import Glibc

/// What a conformance check saw, one line per observation: call results (value or errno name) and the
/// stat fields that mean the same on both sides (never inode numbers, device ids or ctime).
struct Outcome: Equatable, CustomStringConvertible {
    private(set) var lines: [String] = []

    var description: String { lines.joined(separator: "\n") }

    mutating func note(_ line: String) { lines.append(line) }

    mutating func merge(_ other: Outcome, prefix: String) {
        lines += other.lines.map { "\(prefix) \($0)" }
    }

    /// Records a call's result: its value (or just "ok" when `value` is false, for fds and other numbers
    /// that differ between runs) on success, its errno name on failure. The label is evaluated before the
    /// call, so errno is still the call's when read here.
    @discardableResult
    mutating func call<T: BinaryInteger>(_ label: String, _ result: T, value: Bool = true) -> T {
        let saved = errno
        lines.append("\(label): " + (result < 0 ? ErrnoName.of(saved) : value ? "\(result)" : "ok"))
        return result
    }

    /// An fd-returning call; the fd is returned for use (callers close it).
    mutating func fd(_ label: String, _ fd: Int32) -> Int32 { call(label, fd, value: false) }

    /// lstat (or stat with `follow`) of `path`: type, permission bits, links, owner, size; optionally
    /// blocks, device numbers and atime/mtime with nanoseconds.
    mutating func stat(_ label: String, _ path: String, follow: Bool = false, blocks: Bool = false, times: Bool = false) {
        var st = Glibc.stat()
        let rc = follow ? statFollowing(path, &st) : lstat(path, &st)
        guard rc == 0 else {
            lines.append("stat \(label): \(ErrnoName.of(errno))")
            return
        }
        lines.append("stat \(label): " + Self.describe(st, blocks: blocks, times: times))
    }

    mutating func fstat(_ label: String, _ fd: Int32, blocks: Bool = false, times: Bool = false) {
        var st = Glibc.stat()
        guard Glibc.fstat(fd, &st) == 0 else {
            lines.append("fstat \(label): \(ErrnoName.of(errno))")
            return
        }
        lines.append("fstat \(label): " + Self.describe(st, blocks: blocks, times: times))
    }

    private func statFollowing(_ path: String, _ st: inout Glibc.stat) -> Int32 {
        fstatat(AT_FDCWD, path, &st, 0)
    }

    static func describe(_ st: Glibc.stat, blocks: Bool, times: Bool) -> String {
        let types: [UInt32: String] = [S_IFREG: "reg", S_IFDIR: "dir", S_IFLNK: "lnk", S_IFIFO: "fifo",
                                       S_IFCHR: "chr", S_IFBLK: "blk", S_IFSOCK: "sock"]
        let mode = UInt32(st.st_mode)
        var text = "\(types[mode & S_IFMT] ?? "?") \(String(mode & 0o7777, radix: 8)) nlink=\(st.st_nlink)"
            + " uid=\(st.st_uid) gid=\(st.st_gid) size=\(st.st_size)"
        if mode & S_IFMT == S_IFCHR || mode & S_IFMT == S_IFBLK { text += " rdev=\(String(st.st_rdev, radix: 16))" }
        if blocks { text += " blocks=\(st.st_blocks)" }
        if times {
            text += " atime=\(st.st_atim.tv_sec).\(st.st_atim.tv_nsec) mtime=\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        }
        return text
    }

    /// The whole content of `path` as text when printable, else its length and a digest.
    mutating func content(_ label: String, _ path: String) {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            lines.append("content \(label): \(ErrnoName.of(errno))")
            return
        }
        defer { close(fd) }
        lines.append("content \(label): " + Self.render(Posix.readAll(fd)))
    }

    static func render(_ bytes: [UInt8]) -> String {
        if bytes.count <= 256, bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7f || $0 == 10 }) {
            return "\"" + String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\n", with: "\\n") + "\""
        }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a: enough to tell contents apart in a report
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return "\(bytes.count) bytes fnv=\(String(hash, radix: 16))"
    }

    // Serialisation for results that come back from a child process over a pipe.
    var encoded: String { lines.map { $0.replacingOccurrences(of: "\n", with: "\\n") }.joined(separator: "\n") }
    init() {}
    init(encoded: String) { lines = encoded.isEmpty ? [] : encoded.components(separatedBy: "\n") }
}

enum ErrnoName {
    static let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", EIO: "EIO", ENXIO: "ENXIO", EBADF: "EBADF", EAGAIN: "EAGAIN",
        ENOMEM: "ENOMEM", EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", EXDEV: "EXDEV",
        ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL", EMFILE: "EMFILE",
        EFBIG: "EFBIG", ENOSPC: "ENOSPC", ESPIPE: "ESPIPE", EROFS: "EROFS", EMLINK: "EMLINK", ERANGE: "ERANGE",
        ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS", ENOTEMPTY: "ENOTEMPTY", ELOOP: "ELOOP",
        ENODATA: "ENODATA", EOPNOTSUPP: "EOPNOTSUPP", ESTALE: "ESTALE", ETXTBSY: "ETXTBSY",
        EOVERFLOW: "EOVERFLOW", E2BIG: "E2BIG", ENOTTY: "ENOTTY", EDQUOT: "EDQUOT",
    ]
    static func of(_ code: Int32) -> String { names[code] ?? "errno \(code)" }
}
