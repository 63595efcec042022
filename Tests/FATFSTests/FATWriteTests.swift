import FATFS
import TestSupport
import Glibc
import Testing

/// Changes made through FATFS, checked by the oracles: fsck.fat -n is clean and mtools reads back
/// exactly what was written.
@Suite(.enabled(if: Shell.haveTools, Comment(rawValue: Shell.toolsMissing)))
struct FATWriteTests {
    static let configs: [FATConfig] = [
        FATConfig(bits: 12, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: 2048),
        FATConfig(bits: 16, sectorSize: 512, sectorsPerCluster: 4, sizeKiB: 32768),
        FATConfig(bits: 16, sectorSize: 4096, sectorsPerCluster: 2, sizeKiB: 65536),
        FATConfig(bits: 32, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: 65536),
        FATConfig(bits: 32, sectorSize: 4096, sectorsPerCluster: 1, sizeKiB: 307_200),
    ]

    @Test(arguments: configs)
    func changesPassFsckAndMtoolsReadThem(config: FATConfig) throws {
        let scratch = Scratch()
        let image = scratch.path + "/fat.img"
        guard config.make(image) else { return }
        writeFile(scratch.path + "/config.txt", Array("dtparam=audio=on\n".utf8))
        #expect(Shell.run(["mcopy", "-i", image, scratch.path + "/config.txt", "::/"]).status == 0)
        #expect(Shell.run(["mmd", "-i", image, "::/overlays"]).status == 0)

        var rng = SplitMix64(seed: UInt64(config.bits * 7 + config.sectorSize))
        var model: [String: [UInt8]?] = ["config.txt": Array("dtparam=audio=on\n".utf8), "overlays": nil as [UInt8]?]
        let file = ImageFile(image, writable: true)
        let clock = FATTime(seconds: 1_614_861_296)   // 2021-03-04 12:34:56 UTC
        let volume = try FATVolume(device: file.device, readOnly: false, clock: { clock })
        let root = FATVolume.rootID

        // New files: empty, small, multi-cluster with a long name.
        _ = try volume.create(parent: root, name: "ssh")
        model["ssh"] = []
        let userconf = try volume.create(parent: root, name: "userconf.txt")
        _ = try volume.write(userconf.id, at: 0, Array("pi:$6$hash\n".utf8))
        model["userconf.txt"] = Array("pi:$6$hash\n".utf8)
        let bigName = "A much longer name than eight dot three allows.json"
        let big = try volume.create(parent: root, name: bigName)
        let bigData = rng.bytes(100_000)
        _ = try volume.write(big.id, at: 0, bigData)
        model[bigName] = bigData
        #expect(errnoOf { _ = try volume.create(parent: root, name: "SSH") } == EEXIST)

        // Append to an existing file.
        let config = try volume.lookup(parent: root, name: "config.txt")
        _ = try volume.write(config.id, at: config.size, Array("enable_uart=1\n".utf8))
        model["config.txt"] = Array("dtparam=audio=on\nenable_uart=1\n".utf8)

        // Directories, nested files, a move into them.
        let newdir = try volume.mkdir(parent: root, name: "newdir")
        let sub = try volume.mkdir(parent: newdir.id, name: "sub")
        let inner = try volume.create(parent: sub.id, name: "file.bin")
        let innerData = rng.bytes(70_000)
        _ = try volume.write(inner.id, at: 0, innerData)
        model["newdir"] = .some(nil)
        model["newdir/sub"] = .some(nil)
        model["newdir/sub/file.bin"] = innerData
        let lower = try volume.create(parent: root, name: "lower.txt")
        _ = try volume.write(lower.id, at: 0, Array("moved\n".utf8))
        try volume.rename(parent: root, name: "lower.txt", newParent: newdir.id, newName: "Moved File.txt")
        model["newdir/Moved File.txt"] = Array("moved\n".utf8)
        #expect(try volume.readAll(lower.id) == Array("moved\n".utf8), "the node follows its rename")

        // Replace, no-replace, a change of case, a directory moved up (its ".." changes).
        _ = try volume.create(parent: root, name: "victim.txt")
        #expect(errnoOf { try volume.rename(parent: root, name: "ssh", newParent: root, newName: "victim.txt", flags: .noReplace) } == EEXIST)
        try volume.rename(parent: root, name: "ssh", newParent: root, newName: "victim.txt")
        model["victim.txt"] = model.removeValue(forKey: "ssh")!
        try volume.rename(parent: root, name: "userconf.txt", newParent: root, newName: "UserConf.TXT")
        model["UserConf.TXT"] = model.removeValue(forKey: "userconf.txt")!
        try volume.rename(parent: newdir.id, name: "sub", newParent: root, newName: "subtop")
        model["subtop"] = model.removeValue(forKey: "newdir/sub")!
        model["subtop/file.bin"] = model.removeValue(forKey: "newdir/sub/file.bin")!
        #expect(errnoOf { try volume.rename(parent: root, name: "newdir", newParent: newdir.id, newName: "x") } == EINVAL)
        #expect(errnoOf { try volume.rename(parent: root, name: "subtop", newParent: root, newName: "config.txt") } == ENOTDIR)
        #expect(errnoOf { try volume.rename(parent: root, name: "config.txt", newParent: root, newName: "overlays") } == EISDIR)
        #expect(errnoOf { try volume.rename(parent: root, name: "x", newParent: root, newName: "y", flags: .exchange) } == EINVAL)

        // Truncate, then extend with zeros.
        _ = try volume.setAttributes(big.id, size: 1000)
        _ = try volume.setAttributes(big.id, size: 50_000)
        model[bigName] = Array(bigData[0..<1000]) + [UInt8](repeating: 0, count: 49_000)
        #expect(try volume.readAll(big.id) == model[bigName]!!)
        // A write past the end zero-fills the gap.
        let gap = try volume.create(parent: newdir.id, name: "gap.bin")
        _ = try volume.write(gap.id, at: 10_000, [7, 7, 7])
        model["newdir/gap.bin"] = [UInt8](repeating: 0, count: 10_000) + [7, 7, 7]

        // Removal.
        #expect(errnoOf { try volume.rmdir(parent: root, name: "newdir") } == ENOTEMPTY)
        #expect(errnoOf { try volume.rmdir(parent: root, name: "config.txt") } == ENOTDIR)
        #expect(errnoOf { try volume.unlink(parent: root, name: "overlays") } == EISDIR)
        try volume.rmdir(parent: root, name: "overlays")
        model["overlays"] = nil
        let doomed = try volume.mkdir(parent: root, name: "doomed")
        try volume.rmdir(parent: root, name: "doomed")
        #expect(errnoOf { _ = try volume.create(parent: doomed.id, name: "x") } == ENOENT)
        _ = try volume.create(parent: root, name: "gone.txt")
        try volume.unlink(parent: root, name: "gone.txt")
        #expect(errnoOf { _ = try volume.lookup(parent: root, name: "gone.txt") } == ENOENT)

        // Times: what utimens sets, at FAT's resolution.
        let when = FATTime(seconds: 1_500_000_001, nanoseconds: 0)
        let stamped = try volume.setAttributes(config.id, mtime: when)
        #expect(stamped.mtime == FATTime(seconds: 1_500_000_000))

        let ours = try volumeTree(volume)
        #expect(ours == model, "FATFS sees \(describe(ours))")
        try volume.flush()

        let check = fsck(image)
        #expect(check.clean, "fsck.fat -n: \(check.output)")
        let seen = mtoolsTree(image, scratch: scratch.path)
        #expect(seen == model, "mtools sees \(describe(seen)); expected \(describe(model))")
        let listing = Shell.run(["mdir", "-i", image, "::/"]).output
        #expect(listing.contains("2021-03-04  12:34  UserConf.TXT"), "\(listing)")
        #expect(listing.contains("config   txt        31 2017-07-14   2:40"), "\(listing)")
        #expect(Shell.run(["mtype", "-i", image, "::/newdir/Moved File.txt"]).output == "moved\n")
    }

    /// Filling the volume: ENOSPC, nothing half-written, and the volume still clean.
    @Test(arguments: [FATConfig(bits: 12, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: 1024),
                      FATConfig(bits: 32, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: 40960)])
    func fillToENOSPC(config: FATConfig) throws {
        let scratch = Scratch()
        let image = scratch.path + "/fat.img"
        guard config.make(image) else { return }
        let file = ImageFile(image, writable: true)
        let volume = try FATVolume(device: file.device, readOnly: false)
        let fill = try volume.create(parent: FATVolume.rootID, name: "fill.bin")
        var rng = SplitMix64(seed: 99)
        var written: [UInt8] = []
        var failure: Int32?
        let pattern = rng.bytes(1 << 16)
        while failure == nil {
            var chunk = pattern
            chunk[0] = UInt8(truncatingIfNeeded: written.count >> 16)   // each chunk differs
            failure = errnoOf { _ = try volume.write(fill.id, at: UInt64(written.count), chunk) }
            if failure == nil { written += chunk }
        }
        #expect(failure == ENOSPC)
        // The last clusters: smaller writes fill them.
        while errnoOf({ _ = try volume.write(fill.id, at: UInt64(written.count), [0x5A]) }) == nil { written.append(0x5A) }
        #expect(volume.statfs().freeBlocks == 0)
        #expect(try volume.getattr(fill.id).size == UInt64(written.count))
        // Directory entries still fit in existing slots, but a new directory needs a cluster.
        #expect(errnoOf { _ = try volume.mkdir(parent: FATVolume.rootID, name: "more") } == ENOSPC)
        try volume.flush()
        let check = fsck(image)
        #expect(check.clean, "fsck.fat -n: \(check.output)")
        let seen = mtoolsTree(image, scratch: scratch.path)
        #expect(seen["fill.bin"] == .some(written))
        // Unlinked while the node is held, the clusters stay (an open file stays readable); forgotten, they are free.
        try volume.unlink(parent: FATVolume.rootID, name: "fill.bin")
        #expect(volume.statfs().freeBlocks == 0)
        #expect(try volume.read(fill.id, at: 0, count: 4) == Array(written[0..<4]))
        volume.forget(fill.id)
        #expect(volume.statfs().freeBlocks == volume.statfs().blocks - (volume.info.type == .fat32 ? 1 : 0))  // FAT32: the root's cluster
        try volume.flush()
        #expect(fsck(image).clean)
    }

    /// The FAT12/16 root has a fixed number of entries: ENOSPC when they are used up.
    @Test func fixedRootDirectoryFills() throws {
        let scratch = Scratch()
        let image = scratch.path + "/fat.img"
        #expect(Shell.run(["mkfs.vfat", "-C", "-F", "16", "-r", "32", image + "2", "16384"]).status == 0)
        let file = ImageFile(image + "2", writable: true)
        let volume = try FATVolume(device: file.device, readOnly: false)
        let boot = readFile(image + "2")
        let rootEntries = Int(boot[17]) | Int(boot[18]) << 8
        #expect(rootEntries >= 32)
        var created = 0
        while errnoOf({ _ = try volume.create(parent: FATVolume.rootID, name: "F\(created).TXT") }) == nil { created += 1 }
        #expect(created == rootEntries)
        #expect(errnoOf { _ = try volume.create(parent: FATVolume.rootID, name: "one more") } == ENOSPC)
        try volume.flush()
        #expect(fsck(image + "2").clean)
    }
}

/// FUSE calls from many threads: the volume serialises them, and the result is what each thread wrote.
@Suite(.enabled(if: Shell.haveTools, Comment(rawValue: Shell.toolsMissing)))
struct FATConcurrencyTests {
    @Test func concurrentWritersAndReaders() async throws {
        let scratch = Scratch()
        let image = scratch.path + "/fat.img"
        guard FATConfig(bits: 32, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: 65536).make(image) else { return }
        let device = MemoryBlockDevice(bytes: readFile(image))
        let volume = try FATVolume(device: device, readOnly: false)
        let results = try await withThrowingTaskGroup(of: (String, [UInt8]).self) { group in
            for t in 0..<6 {
                group.addTask {
                    var rng = SplitMix64(seed: UInt64(t))
                    let dir = try volume.mkdir(parent: FATVolume.rootID, name: "thread \(t)")
                    let file = try volume.create(parent: dir.id, name: "data of thread \(t).bin")
                    var model: [UInt8] = []
                    for _ in 0..<40 {
                        let length = Int.random(in: 1...9000, using: &rng)
                        let chunk = rng.bytes(length)
                        _ = try volume.write(file.id, at: UInt64(model.count), chunk)
                        model += chunk
                        _ = try volume.list(FATVolume.rootID)
                        #expect(try volume.read(file.id, at: 0, count: model.count) == model)
                    }
                    return ("thread \(t)/data of thread \(t).bin", model)
                }
            }
            var out: [(String, [UInt8])] = []
            for try await r in group { out.append(r) }
            return out
        }
        try volume.flush()
        writeFile(image, device.bytes)
        #expect(fsck(image).clean)
        let seen = mtoolsTree(image, scratch: scratch.path)
        for (path, data) in results { #expect(seen[path] == .some(data), "\(path)") }
    }
}
