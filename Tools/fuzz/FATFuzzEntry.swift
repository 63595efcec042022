// The libFuzzer entry for the FAT reader/writer (Tools/fuzz-parsers): compiled with Sources/FATFS/*.swift
// as one module. The input is the start of a partition (boot sector, FATs, root directory, first
// clusters); the rest of a 64 MiB partition reads as zeros. The volume is opened writable over a COW
// overlay, walked (bounded), then changed a little. Any trap, overflow, hang or sanitizer report is a
// finding; a thrown FATError is the expected answer to garbage.

/// The input, then zeros up to 64 MiB.
final class FuzzDevice: FATBlockDevice {
    let bytes: [UInt8]
    let size: UInt64 = 64 << 20

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FATError) {
        try checkRange(offset, buffer.count)
        let start = Int(offset), inInput = max(0, min(buffer.count, bytes.count - start))
        if inInput > 0 {
            bytes.withUnsafeBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[start..<start + inInput]))
            }
        }
        if inInput < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[inInput...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(FATError) { throw .readOnly }
    func flush() throws(FATError) {}
}

func walk(_ volume: FATVolume, _ id: FATNodeID, depth: Int, budget: inout Int) {
    guard depth < 6, let entries = try? volume.readDirectory(id, from: 0, limit: 64) else { return }
    for entry in entries where entry.name != "." && entry.name != ".." {
        budget -= 1
        guard budget > 0, let attr = try? volume.lookup(parent: id, name: entry.name) else { continue }
        if attr.isDirectory {
            walk(volume, attr.id, depth: depth + 1, budget: &budget)
        } else {
            _ = try? volume.read(attr.id, at: 0, count: 65536)
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size >= 512 else { return 0 }
    let overlay = COWOverlay(base: FuzzDevice(Array(UnsafeBufferPointer(start: data, count: size))),
                             store: MemoryBlockStore(blockSize: 4096), limitBytes: 4 << 20)
    guard let volume = try? FATVolume(device: overlay, readOnly: false, clock: { FATTime(seconds: 1_700_000_000) }) else { return 0 }
    var budget = 300
    walk(volume, FATVolume.rootID, depth: 0, budget: &budget)
    let root = FATVolume.rootID
    _ = volume.statfs()
    if let file = try? volume.create(parent: root, name: "a new file with a long name.txt") {
        _ = try? volume.write(file.id, at: 5000, [1, 2, 3])
        _ = try? volume.setAttributes(file.id, size: 100, mtime: FATTime(seconds: 1))
    }
    _ = try? volume.mkdir(parent: root, name: "NEWDIR")
    for entry in (try? volume.readDirectory(root, from: 0, limit: 6)) ?? [] where entry.name != "." && entry.name != ".." {
        guard let attr = try? volume.lookup(parent: root, name: entry.name) else { continue }
        if attr.isDirectory {
            _ = try? volume.create(parent: attr.id, name: "inner")
            _ = try? volume.rename(parent: root, name: entry.name, newParent: root, newName: entry.name + "~moved")
            _ = try? volume.rmdir(parent: root, name: entry.name + "~moved")
        } else {
            _ = try? volume.write(attr.id, at: attr.size, [9])
            _ = try? volume.rename(parent: root, name: entry.name, newParent: root, newName: "NEWDIR")
            _ = try? volume.unlink(parent: root, name: entry.name)
        }
        volume.forget(attr.id)
    }
    _ = try? volume.flush()
    return 0
}
