import CLinux
import Foundation
import Glibc
import TestSupport

/// One kind of step of a seeded random sequence of every mutating file operation, done through a mount
/// (SandboxFSTests' JournalRandomTests on a test mount, IntegrationTests' DiffSuite on `serve`'s): what
/// the dm engine's change journal must record, so both check it against a full comparison of the trees.
public enum RandomStep: CaseIterable, Sendable {
    case mkfifo, mkdir, symlink, createAndWrite, unlink, rmdir, rename, renameNoReplace, renameExchange, link,
         chmod, chown, truncate, utimens, setxattr, removexattr, openWrite, openTruncate, fallocate, copyRange,
         tmpfileLinked

    /// The FUSE operations the step sends, by the kernel's names (`FuseOperation.name`).
    public var operations: [String] {
        switch self {
        case .mkfifo: ["mknod"]
        case .mkdir: ["mkdir"]
        case .symlink: ["symlink"]
        case .createAndWrite: ["create", "write"]
        case .unlink: ["unlink"]
        case .rmdir: ["rmdir"]
        case .rename, .renameNoReplace, .renameExchange: ["rename"]
        case .link: ["link"]
        case .chmod, .chown, .truncate, .utimens: ["setattr"]
        case .setxattr: ["setxattr"]
        case .removexattr: ["removexattr"]
        case .openWrite, .openTruncate: ["open", "write"]
        case .fallocate: ["open", "fallocate"]
        case .copyRange: ["open", "copy_file_range"]
        case .tmpfileLinked: ["tmpfile", "write", "link"]
        }
    }

    /// The xattrs steps remove: user.x and user.y a test may give its tree, user.r0...2 setxattr's.
    public static let xattrNames = ["user.x", "user.y", "user.r0", "user.r1", "user.r2"]

    /// One step below the directory `s` (a mount); true when it succeeded (failures such as ENOTEMPTY are
    /// part of the sequence: they must leave nothing unjournaled either). `untouchedOnly`: the step changes
    /// only what no earlier step of `random`'s sequence named (else false), so a journal that misses this
    /// kind of operation shows in the comparison right after it: an earlier step's record would hide it.
    public func perform(in s: String, _ tree: TreeShape, _ random: Dice, untouchedOnly: Bool = false) -> Bool {
        let (files, dirs, emptyDirs, touched) = (tree.files, tree.dirs, tree.emptyDirs, random.touched)
        func pick(_ list: [String]) -> String? {
            random.pick(untouchedOnly ? list.filter { touched.isUntouched($0, tree) } : list)
        }
        // A name no entry had, in a directory that was not made, removed or moved (compared whole) before;
        // untouched steps leave the empty ones for rmdir.
        func newName() -> String {
            random.fresh(in: untouchedOnly ? dirs.filter { !touched.isCovered($0) && !emptyDirs.contains($0) } : dirs)
        }
        // Named as the journal records them, before the request (which may still fail).
        func entry(_ path: String) -> String { touched.entry(path, tree); return path }
        func node(_ path: String) -> String { touched.node(path, tree); return path }
        let bytes = random.bytes(Int(random.next() % 9000) + 1)
        func writeAll(_ fd: Int32, at offset: off_t) -> Bool {
            bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) } == bytes.count
        }
        func withOpen(_ path: String, _ flags: Int32, _ body: (Int32) -> Bool) -> Bool {
            let fd = open(s + path, flags | O_CLOEXEC, 0o640)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            return body(fd)
        }
        let entries = files + dirs.filter { !$0.isEmpty }
        // A moved directory is compared with all it holds: untouched steps move files and empty directories.
        let movable = untouchedOnly ? files + emptyDirs : entries
        switch self {
        case .mkfifo: return Glibc.mkfifo(s + entry(newName()), 0o600) == 0
        case .mkdir: return Glibc.mkdir(s + entry(newName()), 0o750) == 0
        case .symlink: return Glibc.symlink("target-\(random.next() % 10)", s + entry(newName())) == 0
        case .createAndWrite: return withOpen(entry(newName()), O_WRONLY | O_CREAT | O_EXCL) { writeAll($0, at: 0) }
        case .unlink:
            guard let file = pick(files) else { return false }
            return Glibc.unlink(s + entry(file)) == 0
        case .rmdir:
            // Mostly empty ones (the others answer ENOTEMPTY, journaled all the same).
            let some = !untouchedOnly && random.next() % 4 == 0 ? dirs.filter { !$0.isEmpty } : emptyDirs
            guard let dir = pick(some) else { return false }
            return Glibc.rmdir(s + entry(dir)) == 0
        case .rename:
            guard let from = pick(movable) else { return false }
            let to = random.next() % 2 == 0 ? newName() : (pick(files.filter { $0 != from }) ?? newName())
            return Glibc.rename(s + entry(from), s + entry(to)) == 0
        case .renameNoReplace:
            guard let from = pick(movable) else { return false }
            return clinux_renameat2(AT_FDCWD, s + entry(from), AT_FDCWD, s + entry(newName()), clinux_RENAME_NOREPLACE) == 0
        case .renameExchange:
            guard let a = pick(movable), let b = pick(movable.filter { $0 != a }) else { return false }
            return clinux_renameat2(AT_FDCWD, s + entry(a), AT_FDCWD, s + entry(b), clinux_RENAME_EXCHANGE) == 0
        case .link:
            guard let file = pick(files) else { return false }
            return Glibc.link(s + node(file), s + entry(newName())) == 0
        case .chmod:
            guard let path = pick(entries) else { return false }
            return Glibc.chmod(s + node(path), mode_t(0o700 | random.next() % 0o100)) == 0
        case .chown:
            guard let path = pick(entries) else { return false }
            return lchown(s + node(path), uid_t(1000 + random.next() % 3), gid_t(1000 + random.next() % 3)) == 0
        case .truncate:
            guard let file = pick(files) else { return false }
            return Glibc.truncate(s + node(file), off_t(random.next() % 20000)) == 0
        case .utimens:
            guard let path = pick(entries) else { return false }
            var times = [timespec(tv_sec: Int(2_000_000 + random.next() % 1000), tv_nsec: 0),
                         timespec(tv_sec: Int(2_000_000 + random.next() % 1000), tv_nsec: Int(random.next() % 1000))]
            return utimensat(AT_FDCWD, s + node(path), &times, AT_SYMLINK_NOFOLLOW) == 0
        case .setxattr:
            guard let path = pick(entries) else { return false }
            return clinux_lsetxattr(s + node(path), Self.xattrNames[2 + Int(random.next() % 3)], bytes, min(bytes.count, 64), 0) == 0
        case .removexattr:
            // An entry holding one, so the step changes something (the others answer ENODATA); untouched:
            // one of the tree's own (setxattr's are on entries it touched).
            guard let path = pick(tree.xattrHolders) ?? (untouchedOnly ? nil : pick(entries)) else { return false }
            var found = false
            for name in Self.xattrNames where clinux_lremovexattr(s + node(path), name) == 0 { found = true }
            return found
        case .openWrite:
            guard let file = pick(files) else { return false }
            let offset = off_t(random.next() % 16384)
            return withOpen(node(file), random.next() % 2 == 0 ? O_WRONLY : O_RDWR | O_APPEND) { writeAll($0, at: offset) }
        case .openTruncate:
            guard let file = pick(files) else { return false }
            return withOpen(node(file), O_WRONLY | O_TRUNC) { writeAll($0, at: 0) }
        case .fallocate:
            guard let file = pick(files) else { return false }
            let length = Int64(random.next() % 65536) + 1
            return withOpen(node(file), O_WRONLY) { clinux_fallocate($0, 0, Int64(random.next() % 8192), length) == 0 }
        case .copyRange:
            // The source is only read: any file.
            guard let source = random.pick(files), let target = pick(files.filter { $0 != source }) else { return false }
            return withOpen(source, O_RDONLY) { inFD in
                withOpen(node(target), O_WRONLY) { outFD in
                    var inOffset: Int64 = 0, outOffset = Int64(random.next() % 4096)
                    return clinux_copy_file_range(inFD, &inOffset, outFD, &outOffset, 4096, 0) >= 0
                }
            }
        case .tmpfileLinked:
            // Nameless until the link: only the name it gets is a change.
            guard let dir = random.pick(dirs) else { return false }
            let fd = open(s + dir, clinux_O_TMPFILE | O_WRONLY | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            guard writeAll(fd, at: 0) else { return false }
            return linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, s + entry(newName()), AT_SYMLINK_FOLLOW) == 0
        }
    }
}

/// The sequence's choices, from one seeded generator, and what its steps have named so far.
public final class Dice {
    private var generator: SplitMix64
    private var counter = 0
    let touched = Touched()
    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }
    public func next() -> UInt64 { generator.next() }
    public func bytes(_ count: Int) -> [UInt8] { generator.bytes(count) }
    public func pick<T>(_ list: [T]) -> T? { list.isEmpty ? nil : list[Int(next() % UInt64(list.count))] }
    public func shuffled<T>(_ list: [T]) -> [T] { list.shuffled(using: &generator) }
    /// A name no entry had before, in one of `dirs`.
    public func fresh(in dirs: [String]) -> String {
        counter += 1
        return (pick(dirs) ?? "") + "/n\(counter)"
    }
}

/// What a sequence's steps named, as the change journal records it (ChangeJournal: at the request, so a
/// step that failed counts too), kept more widely where that is simpler: never less.
final class Touched {
    /// Changed themselves: entries a step changed and the directories holding an entry it made or removed.
    private var entries: Set<String> = []
    /// Made, removed, replaced or moved: compared with everything below them.
    private var trees: Set<String> = []
    /// Files a step changed under one name: they change under all of them.
    private var inodes: Set<UInt64> = []

    /// No step named `path`, a directory above it as a tree, or its file under another name.
    func isUntouched(_ path: String, _ tree: TreeShape) -> Bool {
        !entries.contains(path) && !isCovered(path) && !(tree.inodes[path].map(inodes.contains) ?? false)
    }

    /// `path` or a directory above it was made, removed or moved.
    func isCovered(_ path: String) -> Bool {
        var above = path
        while !above.isEmpty {
            if trees.contains(above) { return true }
            above = String(above[..<(above.lastIndex(of: "/") ?? above.startIndex)])
        }
        return false
    }

    /// An entry is made, removed, replaced or moved (its directory changes too).
    func entry(_ path: String, _ tree: TreeShape) {
        trees.insert(path)
        entries.insert(String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)]))
        if let inode = tree.inodes[path] { inodes.insert(inode) }
    }

    /// An entry's content, attributes or xattrs change.
    func node(_ path: String, _ tree: TreeShape) {
        entries.insert(path)
        if let inode = tree.inodes[path] { inodes.insert(inode) }
    }
}

/// What a step can pick: regular files (symlinks and fifos left out), directories and the empty ones
/// below a root ("/a/1"), sorted; the root directory is "".
public struct TreeShape {
    public let root: String
    public let files: [String], dirs: [String], emptyDirs: [String]
    /// The regular files' inode numbers (a file with several names is one inode).
    public let inodes: [String: UInt64]

    /// The files and directories (the root aside) that hold one of `RandomStep.xattrNames`; read when asked.
    public var xattrHolders: [String] {
        (files + dirs.dropFirst()).filter { path in
            RandomStep.xattrNames.contains { clinux_lgetxattr(root + path, $0, nil, 0) >= 0 }
        }
    }

    public init(reading root: String) throws {
        var files: [String] = [], dirs: [String] = [""], parents: Set<String> = [], inodes: [String: UInt64] = [:]
        for path in try FileManager.default.subpathsOfDirectory(atPath: root).sorted() {
            var st = stat()
            guard lstat(root + "/" + path, &st) == 0 else { continue }
            parents.insert("/" + (path.split(separator: "/").dropLast().joined(separator: "/")))
            switch st.st_mode & S_IFMT {
            case S_IFDIR: dirs.append("/" + path)
            case S_IFREG:
                files.append("/" + path)
                inodes["/" + path] = UInt64(st.st_ino)
            default: break
            }
        }
        self.root = root
        self.files = files
        self.dirs = dirs
        self.inodes = inodes
        emptyDirs = dirs.filter { !$0.isEmpty && !parents.contains($0) }
    }
}
