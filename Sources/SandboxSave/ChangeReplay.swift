import CLinux
import Glibc
import PrintableText
import SandboxDiff

/// Applies a sandbox's changes to a writable copy of its pristine filesystem: deletions deepest first,
/// then additions and modifications parents first, each with owner, xattrs (security.capability and
/// ACLs included), mode and times from the sandbox; directory times last, since adding entries moves them.
/// Every name is resolved one component at a time without following symlinks, in both trees.
/// A sandbox file with several names is one inode in the output: the names among the changes become
/// links to one of them (a name the output already holds as that file, else the first one written).
public struct ChangeReplay {
    private let sandbox: Directory
    private let output: Directory
    /// Sandbox inodes with several links -> the output path that holds the inode: a modified name the
    /// output already has (the image's file, changed in place), or the first name the replay created.
    private var anchors: [InodeKey: [UInt8]] = [:]
    /// Paths the output cannot hold (sockets), for the log.
    public private(set) var skipped: [String] = []

    struct InodeKey: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    public init(sandboxRoot: String, outputRoot: String) throws(SaveError) {
        do {
            sandbox = try Directory(root: sandboxRoot)
            output = try Directory(root: outputRoot)
        } catch {
            throw SaveError(error.description, errno: error.errno)
        }
    }

    public mutating func apply(_ changes: [Change]) throws(SaveError) {
        do {
            // A new link to an image file lists that file too (`links`): it is the anchor, even when the
            // new name sorts before it.
            var lookup = PathLookup(root: sandbox)
            for change in changes where change.kind == .modified && !change.aspects.contains(.type) {
                guard let status = try lookup.status(change.rawPath), status.st_mode & S_IFMT == S_IFREG,
                      status.st_nlink > 1 else { continue }
                let key = InodeKey(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
                if anchors[key] == nil { anchors[key] = change.rawPath }
            }
            for change in changes.reversed() where change.kind == .deleted {
                let (parent, name) = try locate(change.rawPath, in: output)
                try remove(name, in: parent)
            }
            var directories = Set<[UInt8]>()
            for change in changes where change.kind != .deleted {
                try replay(change)
                directories.insert(Self.parentPath(change.rawPath))
            }
            for change in changes where change.kind == .deleted { directories.insert(Self.parentPath(change.rawPath)) }
            for path in directories.sorted(by: { $1.lexicographicallyPrecedes($0) }) { try copyTimes(path) }
        } catch let error as SaveError {
            throw error
        } catch let error as DiffError {
            throw SaveError(error.description, errno: error.errno)
        } catch {
            throw SaveError("\(error)", errno: EIO)
        }
    }

    private mutating func replay(_ change: Change) throws {
        let (sandboxParent, name) = try locate(change.rawPath, in: sandbox)
        let (outputParent, _) = try locate(change.rawPath, in: output)
        // Frozen for the save: an entry cannot vanish, but a directory deleted above it would.
        guard let entry = try sandboxParent.entry(name) else { return }
        let path = change.rawPath
        if entry.fileType == S_IFREG, entry.status.st_nlink > 1, let anchor = anchors[key(entry)], anchor != path {
            try link(name, in: outputParent, to: anchor, path: path)
        } else if try change.kind == .added || change.aspects.contains(.type) || splitFromItsLinks(entry, in: outputParent) {
            if change.kind == .modified { try remove(name, in: outputParent) }
            guard try create(entry, from: sandboxParent, in: outputParent, path: path) else { return }
        } else if change.aspects.contains(.content) || change.aspects.contains(.linkTarget) {
            if entry.fileType == S_IFREG {
                let fd = try check("open", path, name.withCString {
                    openat(outputParent.fd, $0, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC)
                })
                defer { close(fd) }
                try copyContent(entry, from: sandboxParent, to: fd, path: path)
            } else {
                try remove(name, in: outputParent)
                guard try create(entry, from: sandboxParent, in: outputParent, path: path) else { return }
            }
        }
        try copyMetadata(entry, to: outputParent, name: name, path: path)
    }

    /// True when the output's file has more names than the sandbox's: the image's other names of it are
    /// no longer this file in the sandbox (the name was replaced by a new file; deletions are already
    /// replayed), so changing it in place would change them too. It is made anew instead.
    private func splitFromItsLinks(_ entry: Entry, in outputParent: Directory) throws -> Bool {
        guard entry.fileType == S_IFREG, let current = try outputParent.status(entry.name) else { return false }
        return current.st_mode & S_IFMT == S_IFREG && current.st_nlink > entry.status.st_nlink
    }

    /// Makes the entry anew in the output; false when it cannot be held (a socket) and was skipped.
    private mutating func create(_ entry: Entry, from sandboxParent: Directory, in parent: Directory,
                                 path: [UInt8]) throws -> Bool {
        let name = entry.name
        switch entry.fileType {
        case S_IFREG:
            let fd = try check("create", path, name.withCString {
                openat(parent.fd, $0, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0o600)
            })
            defer { close(fd) }
            try copyContent(entry, from: sandboxParent, to: fd, path: path)
            if entry.status.st_nlink > 1 { anchors[key(entry)] = path }
        case S_IFDIR:
            try check("mkdir", path, name.withCString { mkdirat(parent.fd, $0, 0o700) })
        case S_IFLNK:
            try check("symlink", path, (entry.linkTarget ?? []).withCString { target in
                name.withCString { symlinkat(target, parent.fd, $0) }
            })
        case S_IFIFO, S_IFCHR, S_IFBLK:
            try check("mknod", path, name.withCString {
                mknodat(parent.fd, $0, entry.status.st_mode, entry.status.st_rdev)
            })
        default:
            skipped.append(PathText.escape(path))
            return false
        }
        return true
    }

    /// `name` as a link to the output's `anchor` (another name of the same sandbox file), unless it already
    /// is one: whatever the output holds there (the image's separate file) is replaced.
    private func link(_ name: [UInt8], in parent: Directory, to anchor: [UInt8], path: [UInt8]) throws {
        let (anchorParent, anchorName) = try locate(anchor, in: output)
        if let current = try parent.status(name), let target = try anchorParent.status(anchorName),
           current.st_ino == target.st_ino { return }
        try remove(name, in: parent)
        try check("link", path, anchorName.withCString { old in
            name.withCString { linkat(anchorParent.fd, old, parent.fd, $0, 0) }
        })
    }

    private func key(_ entry: Entry) -> InodeKey {
        InodeKey(device: UInt64(entry.status.st_dev), inode: UInt64(entry.status.st_ino))
    }

    /// The data extents of the sandbox's file (holes stay holes), then its exact size.
    private func copyContent(_ entry: Entry, from sandboxParent: Directory, to output: Int32, path: [UInt8]) throws {
        let input = try sandboxParent.openFile(entry.name)
        defer { close(input) }
        let size = UInt64(entry.status.st_size)
        try check("truncate", path, ftruncate(output, off_t(size)))
        var buffer = [UInt8](repeating: 0, count: SparseCopy.chunk)
        var offset: UInt64 = 0
        while offset < size {
            let data = lseek(input, off_t(offset), clinux_SEEK_DATA)
            if data < 0, errno == ENXIO { break }
            try check("SEEK_DATA", path, Int32(data < 0 ? -1 : 0))
            let hole = lseek(input, data, clinux_SEEK_HOLE)
            let end = hole < 0 ? size : min(UInt64(hole), size)
            offset = UInt64(data)
            while offset < end {
                let length = Int(min(UInt64(buffer.count), end - offset))
                let count = buffer.withUnsafeMutableBytes { pread(input, $0.baseAddress, length, off_t(offset)) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { throw SaveError("read \(PathText.escape(path))", errno: count < 0 ? errno : EIO) }
                try SparseCopy.writeNonZero(buffer, count: count, to: output, at: offset)
                offset += UInt64(count)
            }
        }
    }

    /// Owner first (chown drops security.capability), then xattrs, then mode, then times.
    private func copyMetadata(_ entry: Entry, to parent: Directory, name: [UInt8], path: [UInt8]) throws {
        let s = entry.status
        try check("chown", path, name.withCString { fchownat(parent.fd, $0, s.st_uid, s.st_gid, AT_SYMLINK_NOFOLLOW) })
        let current = try parent.xattrs(name)
        let procPath = parent.procPath(name)
        for old in current where !entry.xattrs.contains(where: { $0.name == old.name }) {
            try check("removexattr", path, procPath.withCString { p in old.name.withCString { clinux_lremovexattr(p, $0) } })
        }
        for xattr in entry.xattrs where !current.contains(xattr) {
            try check("setxattr \(PathText.escape(xattr.name))", path, procPath.withCString { p in
                xattr.name.withCString { n in
                    xattr.value.withUnsafeBytes { clinux_lsetxattr(p, n, $0.baseAddress, $0.count, 0) }
                }
            })
        }
        if entry.fileType != S_IFLNK {
            try check("chmod", path, name.withCString { fchmodat(parent.fd, $0, s.st_mode & 0o7777, 0) })
        }
        try setTimes(s, parent: parent, name: name, path: path)
    }

    private func copyTimes(_ path: [UInt8]) throws {
        let (sandboxParent, name) = try locate(path, in: sandbox)
        guard let status = try sandboxParent.status(name) else { return }
        let (outputParent, _) = try locate(path, in: output)
        try setTimes(status, parent: outputParent, name: name, path: path)
    }

    private func setTimes(_ s: stat, parent: Directory, name: [UInt8], path: [UInt8]) throws {
        var times = [s.st_atim, s.st_mtim]
        try check("utimensat", path, name.withCString { utimensat(parent.fd, $0, &times, AT_SYMLINK_NOFOLLOW) })
    }

    private func remove(_ name: [UInt8], in parent: Directory) throws {
        var rc = name.withCString { unlinkat(parent.fd, $0, 0) }
        if rc != 0, errno == EISDIR { rc = name.withCString { unlinkat(parent.fd, $0, AT_REMOVEDIR) } }
        if rc != 0, errno != ENOENT { throw SaveError("remove \(PathText.escape(parent.path(of: name)))", errno: errno) }
    }

    /// The directory holding `path` and the last name; for "/" the root itself and ".".
    private func locate(_ path: [UInt8], in root: Directory) throws -> (Directory, [UInt8]) {
        var components = path.split(separator: UInt8(ascii: "/")).map(Array.init)
        guard let last = components.popLast() else { return (root, [UInt8(ascii: ".")]) }
        var directory = root
        for component in components { directory = try directory.child(component) }
        return (directory, last)
    }

    static func parentPath(_ path: [UInt8]) -> [UInt8] {
        guard let slash = path.lastIndex(of: UInt8(ascii: "/")), slash > 0 else { return [UInt8(ascii: "/")] }
        return Array(path[..<slash])
    }

    @discardableResult
    private func check<T: FixedWidthInteger>(_ operation: String, _ path: [UInt8], _ result: T) throws(SaveError) -> T {
        guard result == -1 else { return result }
        throw SaveError("\(operation) \(PathText.escape(path))", errno: errno)
    }
}
