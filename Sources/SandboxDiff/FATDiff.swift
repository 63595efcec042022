import FATFS
import Glibc
import SandboxDiff

/// A FAT partition's changes: both volumes walked in full (a boot partition holds a few hundred files,
/// and FAT keeps no change set), compared by type, content, mode (the read-only attribute) and mtime.
/// FAT has no owners, xattrs or links; its root directory has no times. A corrupt entry (EIO from FATFS: a
/// looping chain, a chain past the end, a directory cycle) becomes one `unreadable` change naming it, and the
/// rest of the volume is still compared.
public struct FATDiff {
    let sandbox: FATVolume
    let pristine: FATVolume
    /// The partition's mount point in the sandbox ("/boot/firmware").
    let prefix: String
    public private(set) var changes: [Change] = []

    public init(sandbox: FATVolume, pristine: FATVolume, prefix: String) {
        self.sandbox = sandbox
        self.pristine = pristine
        self.prefix = prefix
    }

    public mutating func run() throws(FATError) {
        do {
            try compare(FATVolume.rootID, FATVolume.rootID, path: prefix)
        } catch where error.errno == EIO {
            changes.append(Change(rawPath: Array(prefix.utf8), kind: .unreadable))
        }
    }

    private mutating func compare(_ s: FATNodeID, _ p: FATNodeID, path: String) throws(FATError) {
        let sNames = try Self.names(sandbox, s), pNames = try Self.names(pristine, p)
        for name in Set(sNames).union(pNames).sorted() {
            let child = path + "/" + name
            do {
                try compareEntry(s, p, name, sNames: sNames, pNames: pNames, path: child)
            } catch where error.errno == EIO {
                // A corrupt structure below: this entry is unreadable, the rest of the volume is compared on.
                changes.append(Change(rawPath: Array(child.utf8), kind: .unreadable))
            }
        }
    }

    private mutating func compareEntry(_ s: FATNodeID, _ p: FATNodeID, _ name: String, sNames: [String], pNames: [String],
                                       path child: String) throws(FATError) {
        guard sNames.contains(name) else { return try all(.deleted, pristine, p, name, path: child) }
        guard pNames.contains(name) else { return try all(.added, sandbox, s, name, path: child) }
        let sAttr = try sandbox.lookup(parent: s, name: name)
        defer { sandbox.forget(sAttr.id) }
        let pAttr = try pristine.lookup(parent: p, name: name)
        defer { pristine.forget(pAttr.id) }
        var aspects: [Change.Aspect] = []
        if sAttr.isDirectory != pAttr.isDirectory {
            aspects = [.type]
        } else {
            if !sAttr.isDirectory, try !sameContent(sAttr, pAttr) { aspects.append(.content) }
            if sAttr.mode & 0o7777 != pAttr.mode & 0o7777 { aspects.append(.mode) }
            if sAttr.mtime != pAttr.mtime { aspects.append(.times) }
        }
        if !aspects.isEmpty { changes.append(Change(rawPath: Array(child.utf8), kind: .modified, aspects: aspects)) }
        if aspects == [.type] {
            if pAttr.isDirectory { try below(.deleted, pristine, pAttr.id, path: child) }
            if sAttr.isDirectory { try below(.added, sandbox, sAttr.id, path: child) }
        } else if sAttr.isDirectory {
            try compare(sAttr.id, pAttr.id, path: child)
        }
    }

    private mutating func all(_ kind: Change.Kind, _ volume: FATVolume, _ parent: FATNodeID, _ name: String,
                              path: String) throws(FATError) {
        changes.append(Change(rawPath: Array(path.utf8), kind: kind))
        let attr = try volume.lookup(parent: parent, name: name)
        defer { volume.forget(attr.id) }
        if attr.isDirectory { try below(kind, volume, attr.id, path: path) }
    }

    private mutating func below(_ kind: Change.Kind, _ volume: FATVolume, _ directory: FATNodeID, path: String) throws(FATError) {
        for name in try Self.names(volume, directory) { try all(kind, volume, directory, name, path: path + "/" + name) }
    }

    private func sameContent(_ a: FATAttr, _ b: FATAttr) throws(FATError) -> Bool {
        guard a.size == b.size else { return false }
        var offset: UInt64 = 0
        while offset < a.size {
            let count = Int(min(UInt64(1 << 20), a.size - offset))
            if try sandbox.read(a.id, at: offset, count: count) != pristine.read(b.id, at: offset, count: count) { return false }
            offset += UInt64(count)
        }
        return true
    }

    static func names(_ volume: FATVolume, _ directory: FATNodeID) throws(FATError) -> [String] {
        var names: [String] = []
        var offset: UInt64 = 0
        while true {
            let entries = try volume.readDirectory(directory, from: offset, limit: 256)
            guard let last = entries.last else { break }
            names += entries.map(\.name).filter { $0 != "." && $0 != ".." }
            offset = last.nextOffset
        }
        return names.sorted()
    }
}
