import FATFS
import TestSupport
import Glibc
import Testing

/// Seeded random operations through FATFS checked against an in-memory model after every step, then
/// the whole tree against the model through FATFS (reopened), through mtools, and fsck.fat -n.
/// FATFS_RANDOM_SEED (hex) and FATFS_RANDOM_OPS replay another sequence.
/// FATFS_RANDOM_VOLUMES=DIR splits the run in two for Tools/vm-test, since only its VM's kernel has vfat and
/// 4,500 operations of FATFS's debug build take a minute under emulation: a run where DIR holds no volume of
/// a case runs it and keeps its final volume there; one where DIR holds it only checks that the kernel's
/// vfat reads that volume as FATFS does (FATFS's reading of it is the model: the first run checked that).
@Suite(.enabled(if: Shell.haveTools, Comment(rawValue: Shell.toolsMissing)))
struct FATRandomTests {
    static let seeds: [UInt64] = getenv("FATFS_RANDOM_SEED").flatMap { UInt64(String(cString: $0), radix: 16) }
        .map { [$0] } ?? [0xFA7_0001, 0xFA7_0002, 0xFA7_0003]
    static let operations = getenv("FATFS_RANDOM_OPS").flatMap { Int(String(cString: $0)) } ?? 1500
    static let configs = [
        FATConfig(bits: 12, sectorSize: 512, sectorsPerCluster: 2, sizeKiB: 4096),
        FATConfig(bits: 16, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: 16384),
        FATConfig(bits: 32, sectorSize: 4096, sectorsPerCluster: 1, sizeKiB: 307_200),
    ]
    /// Distinct without regard to ASCII case; long, short, Unicode, dotted.
    static let names = ["a.txt", "B.TXT", "Long name number one.dat", "ünïcødé.bin", "x", "README", "config.txt",
                        "Ωmega file", "many.dots.a.b", "12345678.123", "MiXeD CaSe NaMe.Ext", "sub dir", "k~1"]

    static let volumes = getenv("FATFS_RANDOM_VOLUMES").map { String(cString: $0) }

    @Test(arguments: zip(seeds, configs))
    func randomOperationsMatchTheModel(seed: UInt64, config: FATConfig) throws {
        let scratch = Scratch()
        let kept = Self.volumes.map { "\($0)/\(String(seed, radix: 16))-\(Self.operations).img" }
        if let kept, access(kept, R_OK) == 0 {
            let file = ImageFile(kept, writable: false)
            let ours = try volumeTree(try FATVolume(device: file.device, readOnly: true))
            let kernel = try #require(kernelVfatTree(kept, scratch: scratch.path), "this kernel has no vfat to read \(kept) with")
            #expect(kernel == ours, "kernel vfat: \(describe(kernel))\nFATFS: \(describe(ours))")
            print("FAT random ops: \(config), seed \(String(seed, radix: 16)): the kernel's vfat reads the volume \(kept) as FATFS does (\(ours.count) entries)")
            return
        }
        let image = scratch.path + "/fat.img"
        guard config.make(image) else { return }
        var rng = SplitMix64(seed: seed)
        var model: [String: [UInt8]?] = [:]   // path -> content, nil for a directory
        var file = ImageFile(image, writable: true)
        var volume = try FATVolume(device: file.device, readOnly: false)
        var recent: [String] = []
        var counts: [String: Int] = [:]

        func parentOf(_ p: String) -> String { p.split(separator: "/").dropLast().joined(separator: "/") }
        func children(_ d: String) -> [String] { model.keys.filter { parentOf($0) == d && $0 != d } }
        func pick<T>(_ a: [T]) -> T? { a.isEmpty ? nil : a[Int.random(in: 0..<a.count, using: &rng)] }
        func join(_ d: String, _ n: String) -> String { d.isEmpty ? n : d + "/" + n }
        // Every lookup this test makes is forgotten after its step, as the kernel would: an unlinked file
        // keeps its clusters while its node is held.
        var held: [FATNodeID] = []
        func node(_ p: String) throws -> FATAttr {
            var attr = try volume.getattr(FATVolume.rootID)
            for part in p.split(separator: "/") {
                attr = try volume.lookup(parent: attr.id, name: String(part))
                held.append(attr.id)
            }
            return attr
        }

        for step in 0..<Self.operations {
            let dirs = [""] + model.keys.filter { model[$0]! == nil }.sorted()
            let files = model.keys.filter { model[$0]! != nil }.sorted()
            let op = Int.random(in: 0..<100, using: &rng)
            var what = ""
            var expected: Int32? = nil
            var got: Int32? = nil
            switch op {
            case 0..<15:   // create
                let d = pick(dirs)!, n = pick(Self.names)!, p = join(d, n)
                what = "create \(p)"
                expected = model[p] != nil ? EEXIST : nil
                got = errnoOf { held.append(try volume.create(parent: try node(d).id, name: n).id) }
                if got == nil { model[p] = [] }
            case 15..<40:  // write
                guard let p = pick(files) else { continue }
                let size = model[p]!!.count
                let offset = Int.random(in: 0...min(size + 20_000, 150_000), using: &rng)
                let length = Int.random(in: 1...40_000, using: &rng)
                let data = rng.bytes(length)
                what = "write \(p) \(offset)+\(data.count)"
                got = errnoOf { _ = try volume.write(try node(p).id, at: UInt64(offset), data) }
                if got == nil {
                    var c = model[p]!!
                    if c.count < offset + data.count { c += [UInt8](repeating: 0, count: offset + data.count - c.count) }
                    c.replaceSubrange(offset..<offset + data.count, with: data)
                    model[p] = c
                }
            case 40..<55:  // read
                guard let p = pick(files) else { continue }
                let c = model[p]!!
                let offset = Int.random(in: 0...c.count + 10, using: &rng), count = Int.random(in: 0...70_000, using: &rng)
                what = "read \(p) \(offset)+\(count)"
                let want = offset >= c.count ? [] : Array(c[offset..<min(c.count, offset + count)])
                var bytes: [UInt8] = []
                got = errnoOf { bytes = try volume.read(try node(p).id, at: UInt64(offset), count: count) }
                if got == nil && bytes != want { Issue.record("step \(step): \(what): content differs; recent: \(recent)") }
            case 55..<63:  // truncate
                guard let p = pick(files) else { continue }
                let size = Int.random(in: 0...120_000, using: &rng)
                what = "truncate \(p) \(size)"
                got = errnoOf { _ = try volume.setAttributes(try node(p).id, size: UInt64(size)) }
                if got == nil {
                    var c = model[p]!!
                    if size < c.count { c.removeLast(c.count - size) } else { c += [UInt8](repeating: 0, count: size - c.count) }
                    model[p] = c
                }
            case 63..<71:  // unlink
                guard let p = pick(files) else { continue }
                what = "unlink \(p)"
                got = errnoOf { try volume.unlink(parent: try node(parentOf(p)).id, name: String(p.split(separator: "/").last!)) }
                if got == nil { model[p] = nil }
            case 71..<79:  // mkdir
                let d = pick(dirs)!, n = pick(Self.names)!, p = join(d, n)
                guard p.split(separator: "/").count <= 4 else { continue }
                what = "mkdir \(p)"
                expected = model[p] != nil ? EEXIST : nil
                got = errnoOf { held.append(try volume.mkdir(parent: try node(d).id, name: n).id) }
                if got == nil { model[p] = .some(nil) }
            case 79..<85:  // rmdir
                guard let p = pick(Array(dirs.dropFirst())) else { continue }
                what = "rmdir \(p)"
                expected = children(p).isEmpty ? nil : ENOTEMPTY
                got = errnoOf { try volume.rmdir(parent: try node(parentOf(p)).id, name: String(p.split(separator: "/").last!)) }
                if got == nil { model[p] = nil }
            case 85..<97:  // rename
                guard let src = pick(files + Array(dirs.dropFirst())) else { continue }
                let d = pick(dirs)!, n = pick(Self.names)!, dst = join(d, n)
                what = "rename \(src) -> \(dst)"
                let srcIsDir = model[src]! == nil
                if srcIsDir && (dst == src || dst.hasPrefix(src + "/")) {
                    expected = dst == src ? nil : EINVAL
                } else if let t = model[dst], dst != src {
                    let targetIsDir = t == nil
                    if srcIsDir && !targetIsDir { expected = ENOTDIR }
                    else if !srcIsDir && targetIsDir { expected = EISDIR }
                    else if targetIsDir && !children(dst).isEmpty { expected = ENOTEMPTY }
                }
                got = errnoOf {
                    try volume.rename(parent: try node(parentOf(src)).id, name: String(src.split(separator: "/").last!),
                                      newParent: try node(d).id, newName: n)
                }
                if got == nil && dst != src {
                    let moved = model.keys.filter { $0 == src || $0.hasPrefix(src + "/") }
                    if model[dst] != nil { model[dst] = nil }
                    var next = model
                    for k in moved { next[k] = nil }
                    for k in moved { next[dst + k.dropFirst(src.count)] = model[k]! }
                    model = next
                }
            default:       // flush, sometimes reopen
                what = "flush"
                got = errnoOf { try volume.flush() }
                if op >= 99 {
                    what = "reopen"
                    file = ImageFile(image, writable: true)
                    volume = try FATVolume(device: file.device, readOnly: false)
                }
            }
            for id in held.reversed() { volume.forget(id) }
            held = []
            counts[String(what.prefix { $0 != " " }), default: 0] += 1
            recent = Array((recent + ["\(what) -> \(got.map { String(cString: strerror($0)) } ?? "ok")"]).suffix(12))
            if got != expected {
                Issue.record("step \(step): \(what): errno \(got ?? 0), expected \(expected ?? 0); recent: \(recent)")
                break
            }
        }
        let ours = try volumeTree(volume)
        #expect(ours == model, "FATFS: \(describe(ours))\nmodel: \(describe(model))\nrecent: \(recent)")
        try volume.flush()
        let readOnlyFile = ImageFile(image, writable: false)
        let reopened = try FATVolume(device: readOnlyFile.device, readOnly: true)
        #expect(try volumeTree(reopened) == model, "reopened")
        let check = fsck(image)
        #expect(check.clean, "fsck.fat -n: \(check.output)")
        let seen = mtoolsTree(image, scratch: scratch.path)
        #expect(seen == model, "mtools: \(describe(seen))\nmodel: \(describe(model))")
        if let kernel = kernelVfatTree(image, scratch: scratch.path) {
            #expect(kernel == model, "kernel vfat: \(describe(kernel))\nmodel: \(describe(model))")
            print("FAT random ops: \(config), seed \(String(seed, radix: 16)): the kernel's vfat reads the model back")
        }
        print("FAT random ops: \(config), seed \(String(seed, radix: 16)), \(Self.operations) operations \(counts.sorted { $0.key < $1.key }), "
            + "\(model.count) entries at the end; fsck.fat -n: \(check.output.split(separator: "\n").last ?? "")")
        if let kept {
            let copied = Shell.run(["cp", "--sparse=always", image, kept])
            #expect(copied.status == 0, "keeping the volume: \(copied.output)")
        }
    }
}
