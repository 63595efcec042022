import Glibc

extension TreeDiff {
    /// Every difference, from the paths a `ChangeJournal` recorded: each is compared with the same path in
    /// the pristine tree (a directory that is new, gone or moved with everything below it), so the cost
    /// follows what changed, not the tree. An incomplete journal falls back to `full`.
    public static func journal(sandbox: String, pristine: String, paths: JournalPaths) throws(DiffError) -> [Change] {
        guard paths.complete else { return try full(sandbox: sandbox, pristine: pristine) }
        var diff = TreeDiff()
        let sandboxRoot = try Directory(root: sandbox), pristineRoot = try Directory(root: pristine)
        var entries = paths.entries
        if !paths.inodes.isEmpty { entries.formUnion(try named(paths.inodes, below: sandboxRoot)) }
        let slash = [UInt8(ascii: "/")]
        var sandboxDirs = DirectoryCache(root: sandboxRoot), pristineDirs = DirectoryCache(root: pristineRoot)
        // Compared whole (new, gone, moved or changed type): the journal's paths below them add nothing.
        var covered = Set<[UInt8]>()
        // Byte order puts a directory before everything below it.
        for path in entries.union(paths.trees).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            if Self.isBelow(path, covered) { continue }
            if path == slash {
                try diff.compareRoot(sandboxRoot, pristineRoot)
                if paths.trees.contains(path) {
                    try diff.compareTrees(sandboxRoot, pristineRoot)
                    covered.insert(path)
                }
                continue
            }
            let parent = Self.parent(of: path), name = Array(path[(path.lastIndex(of: UInt8(ascii: "/"))! + 1)...])
            let sandboxParent = try sandboxDirs.directory(parent), pristineParent = try pristineDirs.directory(parent)
            let s = try sandboxParent?.entry(name), p = try pristineParent?.entry(name)
            switch (s, p) {
            case (nil, nil):
                continue
            case (let s?, nil):
                try diff.added(s, in: sandboxParent!)
                if s.fileType == S_IFDIR { covered.insert(path) }
            case (nil, let p?):
                diff.changes.append(Change(rawPath: path, kind: .deleted))
                if p.fileType == S_IFDIR {
                    try diff.all(.deleted, below: pristineParent!.child(name))
                    covered.insert(path)
                }
            case (let s?, let p?):
                try diff.compare(s, p, sandboxParent!, pristineParent!)
                if s.fileType != p.fileType {
                    if s.fileType == S_IFDIR || p.fileType == S_IFDIR { covered.insert(path) }
                } else if s.fileType == S_IFDIR, paths.trees.contains(path) {
                    try diff.compareTrees(sandboxParent!.child(name), pristineParent!.child(name))
                    covered.insert(path)
                }
            }
        }
        return diff.sorted()
    }

    static func parent(of path: [UInt8]) -> [UInt8] {
        guard let slash = path.lastIndex(of: UInt8(ascii: "/")), slash > 0 else { return [UInt8(ascii: "/")] }
        return Array(path[..<slash])
    }

    /// True when an ancestor of `path` is in `set`.
    static func isBelow(_ path: [UInt8], _ set: Set<[UInt8]>) -> Bool {
        guard !set.isEmpty else { return false }
        if set.contains([UInt8(ascii: "/")]) && path != [UInt8(ascii: "/")] { return true }
        var index = path.count - 1
        while index > 0 {
            if path[index] == UInt8(ascii: "/"), set.contains(Array(path[..<index])) { return true }
            index -= 1
        }
        return false
    }

    /// Every path of the tree whose inode is in `inodes` (hard links: every name): reads each directory
    /// once, no file. Only for inodes the journal could not name when they changed.
    static func named(_ inodes: Set<UInt64>, below root: Directory) throws(DiffError) -> Set<[UInt8]> {
        var found = Set<[UInt8]>()
        var pending = [root]
        while let directory = pending.popLast() {
            for (name, inode, isDirectory) in try directory.namesWithInodes() {
                if inodes.contains(inode) { found.insert(directory.path(of: name)) }
                if isDirectory, let child = try? directory.child(name) { pending.append(child) }
            }
        }
        return found
    }
}

/// Directories by path from a tree's root, opened one component at a time without following symlinks;
/// nil where the path is not a directory in that tree. Bounded: cleared when it grows large.
struct DirectoryCache {
    let root: Directory
    private var open: [[UInt8]: Directory?] = [:]

    init(root: Directory) { self.root = root }

    mutating func directory(_ path: [UInt8]) throws(DiffError) -> Directory? {
        if path == [UInt8(ascii: "/")] { return root }
        if let hit = open[path] { return hit }
        if open.count > 512 { open = [:] }
        guard let parent = try directory(TreeDiff.parent(of: path)) else {
            open[path] = .some(nil)
            return nil
        }
        let name = Array(path[(path.lastIndex(of: UInt8(ascii: "/"))! + 1)...])
        let result: Directory?
        do {
            result = try parent.child(name)
        } catch where [ENOENT, ENOTDIR, ELOOP].contains(error.errno) {
            result = nil
        }
        open[path] = .some(result)
        return result
    }
}
