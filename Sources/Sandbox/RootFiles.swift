import Glibc
import LinuxBlock

/// Reads what the partition plan needs from a mounted root filesystem of an untrusted image: every
/// component opened relative to its parent with O_NOFOLLOW, so no symlink in the image is followed.
enum RootFiles {
    /// The bytes of the regular file at `path` (relative, "etc/fstab") below `root`; nil when it does not
    /// exist, is not a regular file, is reached through a symlink, or is larger than `limit`.
    static func read(_ root: String, _ path: String, limit: Int) -> [UInt8]? {
        guard let fd = open(root, path, flags: O_RDONLY) else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size <= limit else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            done += n
        }
        return Array(bytes.prefix(done))
    }

    enum Bounded { case absent, tooLarge(bytes: Int), bytes([UInt8]) }

    /// `read`, telling a file above `limit` (left unread) from an absent one.
    static func readBounded(_ root: String, _ path: String, limit: Int) -> Bounded {
        guard let fd = open(root, path, flags: O_RDONLY) else { return .absent }
        var st = stat()
        let ok = fstat(fd, &st) == 0 && st.st_mode & S_IFMT == S_IFREG
        close(fd)
        guard ok else { return .absent }
        guard st.st_size <= limit else { return .tooLarge(bytes: Int(st.st_size)) }
        return read(root, path, limit: limit).map { .bytes($0) } ?? .absent
    }

    /// The names in directory `path` below `root` (not through a symlink), at most `limit` of them; nil when
    /// it is not a directory.
    static func list(_ root: String, _ path: String, limit: Int = 4096) -> [String]? {
        guard let fd = path.isEmpty ? Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : open(root, path, flags: O_RDONLY | O_DIRECTORY),
              fd >= 0, let dir = fdopendir(fd) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while names.count < limit, let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The inode number of directory `path` below `root` (not through a symlink); nil when it is none.
    static func directoryInode(_ root: String, _ path: String) -> UInt64? {
        guard let fd = open(root, path, flags: O_RDONLY | O_DIRECTORY) else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return UInt64(st.st_ino)
    }

    /// True when `path` ("/boot/firmware") below `root` is a directory (not through a symlink) with no entries.
    static func isEmptyDirectory(_ root: String, _ path: String) -> Bool {
        guard let fd = open(root, path, flags: O_RDONLY | O_DIRECTORY), let dir = fdopendir(fd) else { return false }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { return false }
        }
        return true
    }

    /// Opens `path`'s last component with `flags` after walking the others as directories, never following.
    private static func open(_ root: String, _ path: String, flags: Int32) -> Int32? {
        let parts = path.split(separator: "/").map(String.init)
        guard !parts.isEmpty, !parts.contains(where: { $0 == "." || $0 == ".." }) else { return nil }
        var dir = Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else { return nil }
        for (i, part) in parts.enumerated() {
            let last = i == parts.count - 1
            let next = openat(dir, part, (last ? flags : O_RDONLY | O_DIRECTORY) | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
            close(dir)
            guard next >= 0 else { return nil }
            dir = next
        }
        return dir
    }
}
