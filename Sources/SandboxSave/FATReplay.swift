import DiskImage
import FATFS
import Glibc
import SandboxDiff

/// Writes a FAT partition's changes into the output's copy of that partition, through FATFS: deletions
/// deepest first, then additions and modifications parents first (content, read-only attribute, times),
/// directory times last.
enum FATReplay {
    static func apply(_ changes: [Change], from sandbox: FATVolume, outputFD: Int32, partition: Partition,
                      prefix: String) throws(FATError) {
        let output = try FATVolume(device: FileRegionDevice(fd: outputFD, offset: partition.startByte, size: partition.sizeBytes,
                                                            writable: true), readOnly: false)
        let names = { (change: Change) -> [String] in
            String(decoding: change.rawPath.dropFirst(prefix.utf8.count), as: UTF8.self).split(separator: "/").map(String.init)
        }
        for change in changes.reversed() where change.kind == .deleted {
            var path = names(change)
            guard let name = path.popLast() else { continue }
            let parent = try resolve(output, path)
            defer { release(output, parent) }
            try remove(output, parent.last ?? FATVolume.rootID, name)
        }
        var directories: [[String]] = []
        for change in changes where change.kind != .deleted {
            var path = names(change)
            let full = path
            guard let name = path.popLast() else { continue }
            let source = try resolve(sandbox, full)
            defer { release(sandbox, source) }
            let sourceAttr = try sandbox.getattr(source.last ?? FATVolume.rootID)
            let parentIDs = try resolve(output, path)
            defer { release(output, parentIDs) }
            let parent = parentIDs.last ?? FATVolume.rootID
            let recreate = change.kind == .added || change.aspects.contains(.type)
            if change.kind == .modified, recreate { try remove(output, parent, name) }
            let attr: FATAttr
            if recreate {
                attr = sourceAttr.isDirectory ? try output.mkdir(parent: parent, name: name) : try output.create(parent: parent, name: name)
            } else {
                attr = try output.lookup(parent: parent, name: name)
            }
            defer { output.forget(attr.id) }
            if !sourceAttr.isDirectory, recreate || change.aspects.contains(.content) {
                _ = try output.setAttributes(attr.id, size: 0)
                var offset: UInt64 = 0
                while offset < sourceAttr.size {
                    let bytes = try sandbox.read(sourceAttr.id, at: offset, count: Int(min(UInt64(1 << 20), sourceAttr.size - offset)))
                    guard !bytes.isEmpty else { break }
                    _ = try output.write(attr.id, at: offset, bytes)
                    offset += UInt64(bytes.count)
                }
            }
            _ = try output.setAttributes(attr.id, atime: sourceAttr.atime, mtime: sourceAttr.mtime, mode: sourceAttr.mode)
            if sourceAttr.isDirectory { directories.append(full) }
        }
        // Entries made in a directory move its mtime: set the sandbox's again, deepest first.
        for path in directories.reversed() {
            let source = try resolve(sandbox, path), target = try resolve(output, path)
            defer { release(sandbox, source); release(output, target) }
            guard let s = source.last, let t = target.last else { continue }
            let attr = try sandbox.getattr(s)
            _ = try output.setAttributes(t, atime: attr.atime, mtime: attr.mtime)
        }
        try output.flush()
    }

    /// The node IDs along `path` (each looked up once: release them with `release`).
    private static func resolve(_ volume: FATVolume, _ path: [String]) throws(FATError) -> [FATNodeID] {
        var ids: [FATNodeID] = []
        for name in path {
            do {
                ids.append(try volume.lookup(parent: ids.last ?? FATVolume.rootID, name: name).id)
            } catch {
                release(volume, ids)
                throw error
            }
        }
        return ids
    }

    private static func release(_ volume: FATVolume, _ ids: [FATNodeID]) {
        for id in ids { volume.forget(id) }
    }

    private static func remove(_ volume: FATVolume, _ parent: FATNodeID, _ name: String) throws(FATError) {
        do {
            try volume.unlink(parent: parent, name: name)
        } catch where error.errno == EISDIR {
            try volume.rmdir(parent: parent, name: name)
        } catch where error.errno == ENOENT {}
    }
}
