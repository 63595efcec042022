import CLinux
import Glibc
import Synchronization

/// The paths a sandbox's writes may have changed, for a sandbox whose filesystem keeps no change set of its
/// own (a dm snapshot is blocks, not files). The FUSE layer, which every write passes through, records
/// each mutating request *before* running it, so a change is always journaled by the time it can be seen
/// (a save that freezes the filesystem and then reads the journal misses nothing that is in the tree);
/// a request that then fails leaves a path that compares equal. A file opened for writing is recorded at
/// the open: its writes (passthrough or not, mmap too) go to that open file.
///
/// Paths are found from the fd the request already holds (its /proc/self/fd link, checked against a lookup
/// from the mount's root). A directory's link is always right; a non-directory reopened from its file
/// handle after its dentry left the cache may have none: then its inode number is kept, and diff names it
/// by reading the directories (`JournalPaths.inodes`). Past `limit` entries the journal gives up and diff
/// compares the whole trees (`complete` false): slower, never wrong.
public final class ChangeJournal: Sendable, Hashable {
    /// The hidden mount's path as /proc/self/fd links show it.
    public let root: [UInt8]
    public let limit: Int
    private let state = Mutex(JournalPaths())

    public static let defaultLimit = 1 << 20

    public init(mountPath: String, limit: Int = ChangeJournal.defaultLimit) {
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let real = realpath(mountPath, &resolved) != nil
            ? resolved.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : mountPath
        root = Array(real.utf8)
        self.limit = limit
    }

    public static func == (a: ChangeJournal, b: ChangeJournal) -> Bool { a === b }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    /// What is recorded so far (a copy: writes go on meanwhile).
    public func snapshot() -> JournalPaths { state.withLock { $0 } }

    /// The entry `name` in the directory `parentFD` is made, removed or replaced (or `tree`: moved, so what
    /// is below it must be compared too), and the directory itself changes (its mtime moves).
    /// `mountFD` is the hidden mount's root. A file with several names that loses this one changes (its
    /// link count) under the others: its inode goes to `inodes`.
    public func recordEntry(in parentFD: Int32, name: [UInt8], mountFD: Int32, tree: Bool = false) {
        var own = stat(), existing = stat()
        guard let parent = resolve(parentFD, mountFD: mountFD, status: &own) else { return }
        let path = parent == [UInt8(ascii: "/")] ? parent + name : parent + [UInt8(ascii: "/")] + name
        let linked = name.withCString { fstatat(parentFD, $0, &existing, AT_SYMLINK_NOFOLLOW) } == 0
            && existing.st_nlink > 1 && existing.st_mode & S_IFMT != S_IFDIR
        state.withLock { s in
            s.entries.insert(parent)
            if tree { s.trees.insert(path) } else { s.entries.insert(path) }
            if linked { s.inodes.insert(UInt64(existing.st_ino)) }
            trim(&s)
        }
    }

    /// The inode `fd` refers to (an O_PATH or open fd) changes: content, attributes or xattrs.
    /// A file with several names changes under all of them, but only the one it was reached by is known
    /// here (the filesystem keeps no list of names): its inode goes to `inodes` too.
    public func recordInode(_ fd: Int32, mountFD: Int32) {
        var own = stat()
        guard let path = resolve(fd, mountFD: mountFD, status: &own) else { return }
        state.withLock { s in
            s.entries.insert(path)
            if own.st_nlink > 1, own.st_mode & S_IFMT != S_IFDIR { s.inodes.insert(UInt64(own.st_ino)) }
            trim(&s)
        }
    }

    /// The path of `fd` from the mount's root; nil when nothing needs recording (the inode has no name any
    /// more) or when it went into `inodes` / gave up instead.
    private func resolve(_ fd: Int32, mountFD: Int32, status own: inout stat) -> [UInt8]? {
        guard fstatat(fd, "", &own, clinux_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 else {
            giveUp()
            return nil
        }
        // Unlinked (or an O_TMPFILE not linked yet): not in the tree, nothing it does can show.
        if own.st_nlink == 0 { return nil }
        if let path = linkPath(fd), verify(path, own, mountFD: mountFD) { return path }
        if own.st_mode & S_IFMT == S_IFDIR {
            // A directory always has its true path; one we cannot name (too deep) is beyond the journal.
            giveUp()
        } else {
            state.withLock { s in
                s.inodes.insert(UInt64(own.st_ino))
                trim(&s)
            }
        }
        return nil
    }

    /// The /proc/self/fd link below `root`, as "/" or "/a/b".
    private func linkPath(_ fd: Int32) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = buffer.withUnsafeMutableBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { readlink("/proc/self/fd/\(fd)", $0.baseAddress!, $0.count) }
        }
        guard count > 0, count < buffer.count else { return nil }
        let link = buffer[..<count]
        guard link.starts(with: root) else { return nil }
        let rest = link.dropFirst(root.count)
        if rest.isEmpty { return [UInt8(ascii: "/")] }
        guard rest.first == UInt8(ascii: "/") else { return nil }
        return Array(rest)
    }

    /// The path names the inode now (not a " (deleted)" suffix, not a disconnected dentry's guess).
    private func verify(_ path: [UInt8], _ own: stat, mountFD: Int32) -> Bool {
        var found = stat()
        let relative = path == [UInt8(ascii: "/")] ? [UInt8(ascii: ".")] : Array(path.dropFirst())
        let rc = relative.withCString { fstatat(mountFD, $0, &found, AT_SYMLINK_NOFOLLOW) }
        return rc == 0 && found.st_ino == own.st_ino && found.st_dev == own.st_dev
    }

    /// Something was not journaled: diff must compare the whole trees.
    public func giveUp() {
        state.withLock { s in
            s.complete = false
            s.entries = []
            s.trees = []
            s.inodes = []
        }
    }

    private func trim(_ s: inout JournalPaths) {
        guard s.complete, s.entries.count + s.trees.count + s.inodes.count > limit else { return }
        s = JournalPaths(complete: false)
    }
}

/// A journal's content: paths from the tree's root ("/", "/etc/hostname").
public struct JournalPaths: Sendable, Equatable {
    /// Entries that may differ (their own type, content and attributes).
    public var entries: Set<[UInt8]> = []
    /// Entries moved: compared with everything below them.
    public var trees: Set<[UInt8]> = []
    /// Changed non-directories that could not be named when they changed.
    public var inodes: Set<UInt64> = []
    /// False: something was not journaled; only a comparison of the whole trees is right.
    public var complete = true

    public init(entries: Set<[UInt8]> = [], trees: Set<[UInt8]> = [], inodes: Set<UInt64> = [], complete: Bool = true) {
        self.entries = entries
        self.trees = trees
        self.inodes = inodes
        self.complete = complete
    }
}
