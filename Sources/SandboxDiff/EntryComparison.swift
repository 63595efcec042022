import CLinux
import Glibc

/// Compares one entry of the sandbox with the same path in the pristine tree.
enum EntryComparison {
    /// What differs; `[.type]` alone when the types differ (nothing else is comparable then).
    static func aspects(sandbox: Entry, in sandboxDirectory: Directory, pristine: Entry,
                        in pristineDirectory: Directory) throws(DiffError) -> [Change.Aspect] {
        let s = sandbox.status, p = pristine.status
        guard sandbox.fileType == pristine.fileType else { return [.type] }
        var aspects: [Change.Aspect] = []
        switch sandbox.fileType {
        case S_IFREG:
            if s.st_size != p.st_size {
                aspects.append(.content)
            } else if try !sameBytes(sandbox.name, in: sandboxDirectory, pristine.name, in: pristineDirectory,
                                     size: Int64(s.st_size)) {
                aspects.append(.content)
            }
        case S_IFLNK:
            if sandbox.linkTarget != pristine.linkTarget { aspects.append(.linkTarget) }
        case S_IFCHR, S_IFBLK:
            if s.st_rdev != p.st_rdev { aspects.append(.content) }
        default:
            break
        }
        // A directory's count follows its subdirectories, which are compared themselves.
        if sandbox.fileType != S_IFDIR, s.st_nlink != p.st_nlink { aspects.append(.links) }
        if s.st_mode & 0o7777 != p.st_mode & 0o7777 { aspects.append(.mode) }
        if s.st_uid != p.st_uid || s.st_gid != p.st_gid { aspects.append(.owner) }
        if s.st_mtim.tv_sec != p.st_mtim.tv_sec || s.st_mtim.tv_nsec != p.st_mtim.tv_nsec { aspects.append(.times) }
        if sandbox.xattrs != pristine.xattrs { aspects.append(.xattrs) }
        return aspects
    }

    static let chunk = 1 << 20

    /// Byte comparison of two regular files of `size` bytes; ranges that are holes in both are skipped.
    static func sameBytes(_ a: [UInt8], in aDirectory: Directory, _ b: [UInt8], in bDirectory: Directory,
                          size: Int64) throws(DiffError) -> Bool {
        let aFD = try aDirectory.openFile(a)
        defer { close(aFD) }
        let bFD = try bDirectory.openFile(b)
        defer { close(bFD) }
        var aBuffer = [UInt8](repeating: 0, count: chunk), bBuffer = [UInt8](repeating: 0, count: chunk)
        var offset: Int64 = 0
        while offset < size {
            // Both are holes up to the nearer data: nothing to read there.
            let next = min(nextData(aFD, from: offset, size: size), nextData(bFD, from: offset, size: size))
            if next >= size { return true }
            offset = next
            let length = Int(min(Int64(chunk), size - offset))
            let aCount = try readFully(aFD, &aBuffer, length, at: offset, aDirectory.path(of: a))
            let bCount = try readFully(bFD, &bBuffer, length, at: offset, bDirectory.path(of: b))
            // A file that shrank under us: different.
            guard aCount == length, bCount == length else { return false }
            let equal = aBuffer.withUnsafeBytes { x in bBuffer.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, length) == 0 } }
            if !equal { return false }
            offset += Int64(length)
        }
        return true
    }

    /// The next offset at or after `offset` that holds data; `size` when only a hole follows. A
    /// filesystem without SEEK_DATA answers as if all were data.
    static func nextData(_ fd: Int32, from offset: Int64, size: Int64) -> Int64 {
        let next = lseek(fd, off_t(offset), clinux_SEEK_DATA)
        if next >= 0 { return Int64(next) }
        return errno == ENXIO ? size : offset
    }

    static func readFully(_ fd: Int32, _ buffer: inout [UInt8], _ length: Int, at offset: Int64,
                          _ path: [UInt8]) throws(DiffError) -> Int {
        var done = 0
        while done < length {
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, length - done, off_t(offset) + off_t(done)) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw DiffError("read", path, errno: errno) }
            if count == 0 { break }
            done += count
        }
        return done
    }
}
