import Glibc
import SandboxDiff

/// lstat by path from a tree's root, one component at a time without following symlinks.
struct PathLookup {
    let root: Directory
    private var last: (path: [UInt8], directory: Directory?)?

    init(root: Directory) { self.root = root }

    mutating func status(_ path: [UInt8]) throws(DiffError) -> stat? {
        let slash = path.lastIndex(of: UInt8(ascii: "/")) ?? 0
        let parentPath = Array(path[..<slash]), name = Array(path[(slash + 1)...])
        if name.isEmpty { return try root.status([]) }
        let parent: Directory?
        if let last, last.path == parentPath {
            parent = last.directory
        } else {
            parent = try open(parentPath)
            last = (parentPath, parent)
        }
        return try parent?.status(name)
    }

    private func open(_ path: [UInt8]) throws(DiffError) -> Directory? {
        var directory = root
        for component in path.split(separator: UInt8(ascii: "/")) {
            do {
                directory = try directory.child(Array(component))
            } catch where [ENOENT, ENOTDIR, ELOOP].contains(error.errno) {
                return nil
            }
        }
        return directory
    }
}
