import Glibc

/// Finds what differs between a sandbox's tree and the pristine tree it started from.
///
/// `overlay` costs time in proportion to what changed: an overlay's upper layer holds exactly the
/// entries that were created, copied up (any change to a file copies it up) or deleted (whiteouts), so
/// only those are compared. `journal` (TreeDiff+Journal.swift) compares the paths a ChangeJournal
/// recorded (dm). `full` compares every entry of both trees; it is the fallback for trees with no change
/// set, and is used inside opaque or renamed directories of an overlay.
public struct TreeDiff {
    var changes: [Change] = []
    /// overlay: inodes of the image's files with several names that changed through one of them.
    private var linked: Set<UInt64> = []

    /// Every difference, sorted by path.
    public static func overlay(merged: String, upper: String, lower: String) throws(DiffError) -> [Change] {
        var diff = TreeDiff()
        let sandbox = try Directory(root: merged), pristine = try Directory(root: lower)
        try diff.compareRoot(sandbox, pristine)
        try diff.walkUpper(try Directory(root: upper), sandbox, pristine)
        if !diff.linked.isEmpty { try diff.compareOtherNames(sandbox, pristine) }
        return diff.sorted()
    }

    /// A file of the image with several names changes under all of them, but overlayfs copies up (or
    /// whites out) only the name used; its index keeps the others one inode with it. Those names are found
    /// by reading every directory (not file) of the image, and compared.
    private mutating func compareOtherNames(_ sandboxRoot: Directory, _ pristineRoot: Directory) throws(DiffError) {
        let listed = Set(changes.map(\.rawPath))
        var sandboxDirs = DirectoryCache(root: sandboxRoot), pristineDirs = DirectoryCache(root: pristineRoot)
        for path in try Self.named(linked, below: pristineRoot) where !listed.contains(path) {
            let name = Array(path[(path.lastIndex(of: UInt8(ascii: "/"))! + 1)...])
            guard let sandbox = try sandboxDirs.directory(Self.parent(of: path)), let s = try sandbox.entry(name),
                  let pristine = try pristineDirs.directory(Self.parent(of: path)), let p = try pristine.entry(name) else { continue }
            try compare(s, p, sandbox, pristine)
        }
    }

    public static func full(sandbox: String, pristine: String) throws(DiffError) -> [Change] {
        var diff = TreeDiff()
        let sandboxRoot = try Directory(root: sandbox), pristineRoot = try Directory(root: pristine)
        try diff.compareRoot(sandboxRoot, pristineRoot)
        try diff.compareTrees(sandboxRoot, pristineRoot)
        return diff.sorted()
    }

    func sorted() -> [Change] {
        changes.sorted { $0.rawPath.lexicographicallyPrecedes($1.rawPath) }
    }

    mutating func compareRoot(_ sandbox: Directory, _ pristine: Directory) throws(DiffError) {
        guard let s = try sandbox.entry([]), let p = try pristine.entry([]) else { return }
        let aspects = try EntryComparison.aspects(sandbox: s, in: sandbox, pristine: p, in: pristine)
        if !aspects.isEmpty { changes.append(Change(rawPath: sandbox.rawPath, kind: .modified, aspects: aspects)) }
    }

    /// Walks the upper directory matching `sandbox` (the merged view) and `pristine` (the lower layer;
    /// nil below a directory the lower layer does not have).
    private mutating func walkUpper(_ upper: Directory, _ sandbox: Directory, _ pristine: Directory) throws(DiffError) {
        for name in try upper.names() {
            guard let upperStatus = try upper.status(name) else { continue }
            if try OverlayMarks.isWhiteout(upperStatus, name, in: upper) {
                if let gone = try pristine.status(name) {
                    noteLinked(gone)
                    changes.append(Change(rawPath: pristine.path(of: name), kind: .deleted))
                    if gone.st_mode & S_IFMT == S_IFDIR { try all(.deleted, below: pristine.child(name)) }
                }
                continue
            }
            // The merged view shows every upper entry; one missing was removed while we looked.
            guard let s = try sandbox.entry(name) else { continue }
            guard let p = try pristine.entry(name) else {
                try added(s, in: sandbox)
                continue
            }
            noteLinked(p.status)
            try compare(s, p, sandbox, pristine)
            guard s.fileType == S_IFDIR, p.fileType == S_IFDIR else { continue }
            let upperChild = try upper.child(name)
            if try OverlayMarks.mergesLowerByRule(upperChild) {
                try walkUpper(upperChild, sandbox.child(name), pristine.child(name))
            } else {
                // Opaque or redirected (renamed): what the lower holds at this path is no guide.
                try compareTrees(sandbox.child(name), pristine.child(name))
            }
        }
    }

    private mutating func noteLinked(_ pristine: stat) {
        if pristine.st_mode & S_IFMT == S_IFREG, pristine.st_nlink > 1 { linked.insert(UInt64(pristine.st_ino)) }
    }

    /// Every entry of both directories, recursively.
    mutating func compareTrees(_ sandbox: Directory, _ pristine: Directory) throws(DiffError) {
        var sandboxNames = try sandbox.names()[...], pristineNames = try pristine.names()[...]
        while !sandboxNames.isEmpty || !pristineNames.isEmpty {
            let order: Int
            if let s = sandboxNames.first, let p = pristineNames.first {
                order = s == p ? 0 : (s.lexicographicallyPrecedes(p) ? -1 : 1)
            } else {
                order = sandboxNames.isEmpty ? 1 : -1
            }
            if order < 0 {
                if let s = try sandbox.entry(sandboxNames.removeFirst()) { try added(s, in: sandbox) }
            } else if order > 0 {
                let name = pristineNames.removeFirst()
                if let p = try pristine.status(name) {
                    changes.append(Change(rawPath: pristine.path(of: name), kind: .deleted))
                    if p.st_mode & S_IFMT == S_IFDIR { try all(.deleted, below: pristine.child(name)) }
                }
            } else {
                let name = sandboxNames.removeFirst()
                pristineNames.removeFirst()
                guard let s = try sandbox.entry(name), let p = try pristine.entry(name) else { continue }
                try compare(s, p, sandbox, pristine)
                if s.fileType == S_IFDIR, p.fileType == S_IFDIR { try compareTrees(sandbox.child(name), pristine.child(name)) }
            }
        }
    }

    /// A modified entry (or nothing); on a change of type what was below the old or new directory too.
    mutating func compare(_ s: Entry, _ p: Entry, _ sandbox: Directory, _ pristine: Directory) throws(DiffError) {
        let aspects = try EntryComparison.aspects(sandbox: s, in: sandbox, pristine: p, in: pristine)
        guard !aspects.isEmpty else { return }
        changes.append(Change(rawPath: sandbox.path(of: s.name), kind: .modified, aspects: aspects))
        guard aspects == [.type] else { return }
        if p.fileType == S_IFDIR { try all(.deleted, below: pristine.child(p.name)) }
        if s.fileType == S_IFDIR { try all(.added, below: sandbox.child(s.name)) }
    }

    mutating func added(_ s: Entry, in sandbox: Directory) throws(DiffError) {
        changes.append(Change(rawPath: sandbox.path(of: s.name), kind: .added))
        if s.fileType == S_IFDIR { try all(.added, below: sandbox.child(s.name)) }
    }

    /// `kind` for every entry below `directory` (an added or deleted directory's content).
    mutating func all(_ kind: Change.Kind, below directory: Directory) throws(DiffError) {
        for name in try directory.names() {
            guard let info = try directory.status(name) else { continue }
            changes.append(Change(rawPath: directory.path(of: name), kind: kind))
            if info.st_mode & S_IFMT == S_IFDIR { try all(kind, below: directory.child(name)) }
        }
    }
}

/// How overlayfs marks its upper layer (Documentation/filesystems/overlayfs.rst).
enum OverlayMarks {
    /// A 0/0 character device, or a zero-size file with the xwhiteout xattr.
    static func isWhiteout(_ info: stat, _ name: [UInt8], in upper: Directory) throws(DiffError) -> Bool {
        let type = info.st_mode & S_IFMT
        if type == S_IFCHR { return info.st_rdev == 0 }
        guard type == S_IFREG, info.st_size == 0 else { return false }
        return try upper.xattrs(name).contains { $0.name == Array("trusted.overlay.whiteout".utf8) }
    }

    /// False for an opaque directory (lower content hidden) or a redirected one (moved from elsewhere).
    static func mergesLowerByRule(_ directory: Directory) throws(DiffError) -> Bool {
        for xattr in try directory.xattrs([]) {
            if xattr.name == Array("trusted.overlay.opaque".utf8), xattr.value.first == UInt8(ascii: "y") { return false }
            if xattr.name == Array("trusted.overlay.redirect".utf8) { return false }
        }
        return true
    }
}
