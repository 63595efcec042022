import CLinux
import Foundation
import Glibc

/// The calls and constants the conformance checks need that Swift's Glibc module does not import
/// (_GNU_SOURCE names, sys/xattr.h). Constants come from CLinux where it has them, else they are the
/// Linux (x86_64 and arm64 generic) values; the functions are looked up with dlsym (a check calls libc
/// as any program would, not the daemon's wrappers).
enum Posix {
    static let O_PATH = clinux_O_PATH
    static let O_TMPFILE = clinux_O_TMPFILE
    #if arch(arm64)
    static let O_DIRECT: Int32 = 0o200000
    #else
    static let O_DIRECT: Int32 = 0o40000
    #endif
    static let AT_EMPTY_PATH = clinux_AT_EMPTY_PATH
    static let UTIME_NOW = clinux_UTIME_NOW
    static let UTIME_OMIT = clinux_UTIME_OMIT
    static let RENAME_NOREPLACE = clinux_RENAME_NOREPLACE
    static let RENAME_EXCHANGE = clinux_RENAME_EXCHANGE
    static let FALLOC_FL_KEEP_SIZE = clinux_FALLOC_FL_KEEP_SIZE
    static let FALLOC_FL_PUNCH_HOLE = clinux_FALLOC_FL_PUNCH_HOLE
    static let FALLOC_FL_COLLAPSE_RANGE: Int32 = 8
    static let FALLOC_FL_ZERO_RANGE: Int32 = 0x10
    static let FALLOC_FL_INSERT_RANGE: Int32 = 0x20
    static let SEEK_DATA = clinux_SEEK_DATA
    static let SEEK_HOLE = clinux_SEEK_HOLE
    static let XATTR_CREATE: Int32 = 1
    static let XATTR_REPLACE: Int32 = 2
    // nonisolated(unsafe) proof, here and below: immutable lets (a constant, libc function pointers), never written.
    nonisolated(unsafe) static let mapFailed = UnsafeMutableRawPointer(bitPattern: -1)

    private static func symbol<T>(_ name: String, _: T.Type) -> T {
        guard let pointer = dlsym(nil, name) else {
            fatalError("dlsym \(name): not in libc")
        }
        return unsafeBitCast(pointer, to: T.self)
    }

    typealias CPath = UnsafePointer<CChar>
    nonisolated(unsafe) static let renameat2 = symbol("renameat2",
        (@convention(c) (Int32, CPath, Int32, CPath, UInt32) -> Int32).self)
    nonisolated(unsafe) static let fallocate = symbol("fallocate", (@convention(c) (Int32, Int32, Int64, Int64) -> Int32).self)
    nonisolated(unsafe) static let copyFileRange = symbol("copy_file_range",
        (@convention(c) (Int32, UnsafeMutablePointer<off_t>?, Int32, UnsafeMutablePointer<off_t>?, Int, UInt32) -> Int).self)
    nonisolated(unsafe) static let syncfs = symbol("syncfs", (@convention(c) (Int32) -> Int32).self)
    nonisolated(unsafe) static let lsetxattr = symbol("lsetxattr",
        (@convention(c) (CPath, CPath, UnsafeRawPointer?, Int, Int32) -> Int32).self)
    nonisolated(unsafe) static let lgetxattr = symbol("lgetxattr",
        (@convention(c) (CPath, CPath, UnsafeMutableRawPointer?, Int) -> Int).self)
    nonisolated(unsafe) static let llistxattr = symbol("llistxattr",
        (@convention(c) (CPath, UnsafeMutablePointer<CChar>?, Int) -> Int).self)
    nonisolated(unsafe) static let lremovexattr = symbol("lremovexattr", (@convention(c) (CPath, CPath) -> Int32).self)

    static func readAll(_ fd: Int32) -> [UInt8] {
        var all: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        var offset: off_t = 0
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, $0.count, offset) }
            if count <= 0 { break }
            all += chunk.prefix(count)
            offset += off_t(count)
        }
        return all
    }

    /// Creates (or truncates) `path` with `text`; returns 0 or -1 with errno.
    @discardableResult
    static func writeFile(_ path: String, _ text: String, mode: mode_t = 0o644) -> Int32 {
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { return -1 }
        let written = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        let saved = errno
        close(fd)
        errno = saved
        return written == text.utf8.count ? 0 : -1
    }

    static func write(_ fd: Int32, _ text: String) -> Int { text.withCString { Glibc.write(fd, $0, strlen($0)) } }
    static func pwrite(_ fd: Int32, _ text: String, _ offset: off_t) -> Int {
        text.withCString { Glibc.pwrite(fd, $0, strlen($0), offset) }
    }

    /// Reads `count` bytes at `offset` as text (for short printable contents).
    static func pread(_ fd: Int32, _ count: Int, _ offset: off_t) -> String {
        var buffer = [UInt8](repeating: 0, count: count)
        let got = buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, count, offset) }
        if got < 0 { return ErrnoName.of(errno) }
        return Outcome.render(Array(buffer.prefix(got)))
    }

    static func setxattr(_ path: String, _ name: String, _ value: [UInt8], _ flags: Int32 = 0) -> Int32 {
        value.withUnsafeBytes { lsetxattr(path, name, $0.baseAddress, $0.count, flags) }
    }

    /// getxattr as text: the value, or the errno name.
    static func getxattr(_ path: String, _ name: String, size: Int = 65536) -> String {
        var buffer = [UInt8](repeating: 0, count: size)
        let count = buffer.withUnsafeMutableBytes { lgetxattr(path, name, $0.baseAddress, size) }
        return count < 0 ? ErrnoName.of(errno) : Outcome.render(Array(buffer.prefix(count)))
    }

    static func listxattr(_ path: String) -> String {
        var buffer = [CChar](repeating: 0, count: 65536)
        let count = llistxattr(path, &buffer, buffer.count)
        guard count >= 0 else { return ErrnoName.of(errno) }
        let bytes = buffer.prefix(count).map { UInt8(bitPattern: $0) }
        return bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.joined(separator: ",")
    }

    /// Runs `body` in a forked child as uid/gid (with `groups` as its supplementary groups, umask 022) with its working
    /// directory at `directory` (entered while still root, so the 0700 hidden mount above it does not
    /// matter); the child's outcome comes back over a pipe. The child only makes syscalls and formats text.
    static func asUser(_ uid: uid_t, _ gid: gid_t, groups: [gid_t] = [], in directory: String,
                       _ body: () -> Outcome) -> Outcome {
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dirFD >= 0 else { return Outcome(encoded: "asUser open \(directory): \(ErrnoName.of(errno))") }
        defer { close(dirFD) }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return Outcome(encoded: "asUser pipe: \(ErrnoName.of(errno))") }
        let child = fork()
        if child == 0 {
            close(fds[0])
            guard fchdir(dirFD) == 0, setgroups(groups.count, groups) == 0, setgid(gid) == 0, setuid(uid) == 0 else {
                _exit(99)
            }
            umask(0o022)
            let text = body().encoded
            _ = text.withCString { Glibc.write(fds[1], $0, strlen($0)) }
            _exit(0)
        }
        close(fds[1])
        defer { close(fds[0]) }
        guard child > 0 else { return Outcome(encoded: "asUser fork: \(ErrnoName.of(errno))") }
        let text = String(decoding: readPipe(fds[0]), as: UTF8.self)
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        var outcome = Outcome(encoded: text)
        if status != 0 { outcome.note("child exit status \(status)") }
        return outcome
    }

    private static func readPipe(_ fd: Int32) -> [UInt8] {
        var all: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            all += chunk.prefix(count)
        }
        return all
    }
}
