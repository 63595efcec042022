import FATFS
import TestSupport
import Glibc
import Testing

/// Images made by mkfs.vfat and filled by mtools, read back through FATFS: every name, byte, size and
/// the volume's own figures.
@Suite(.enabled(if: Shell.haveTools, Comment(rawValue: Shell.toolsMissing)))
struct FATReadTests {
    static let configs: [FATConfig] = [
        FATConfig(bits: 12, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: 2048),
        FATConfig(bits: 12, sectorSize: 512, sectorsPerCluster: 4, sizeKiB: 8192),
        FATConfig(bits: 12, sectorSize: 4096, sectorsPerCluster: 1, sizeKiB: 12288),
        FATConfig(bits: 16, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: 16384),
        FATConfig(bits: 16, sectorSize: 512, sectorsPerCluster: 64, sizeKiB: 163_840),
        FATConfig(bits: 16, sectorSize: 4096, sectorsPerCluster: 2, sizeKiB: 65536),
        FATConfig(bits: 32, sectorSize: 512, sectorsPerCluster: 1, sizeKiB: 65536),
        FATConfig(bits: 32, sectorSize: 512, sectorsPerCluster: 8, sizeKiB: 307_200),
        FATConfig(bits: 32, sectorSize: 4096, sectorsPerCluster: 1, sizeKiB: 307_200),
        // 32 KiB clusters need 2 GiB for FAT32 (mtools takes fewer than 65525 clusters as FAT16, as fatgen103 says).
        FATConfig(bits: 32, sectorSize: 512, sectorsPerCluster: 64, sizeKiB: 2_200_000),
    ]

    /// The host tree mcopy copies in: (path, content); nil content = directory.
    static func tree(_ rng: inout SplitMix64) -> [(String, [UInt8]?)] {
        var t: [(String, [UInt8]?)] = [
            ("empty.bin", []), ("one.txt", [0x41]), ("multi.bin", rng.bytes(300_000)),
            ("A long file name with spaces.txt", Array("long\n".utf8)),
            ("ünïcödé-名前.txt", Array("unicode\n".utf8)),
            ("config.txt", Array("arm_64bit=1\n".utf8)), ("UPPER.TXT", [1, 2, 3]), ("MiXeD.Txt", [4, 5]),
            ("many", nil), ("d1", nil),
        ]
        for i in 0..<80 { t.append(("many/file number \(i) with a long name.dat", Array("\(i)".utf8))) }
        var deep = "d1"
        for level in 2...9 { deep += "/d\(level)"; t.append((deep, nil)) }
        t.append((deep + "/deep.txt", rng.bytes(5000)))
        return t
    }

    @Test(arguments: configs)
    func readsWhatMtoolsWrote(config: FATConfig) throws {
        let scratch = Scratch()
        let image = scratch.path + "/fat.img", host = scratch.path + "/host"
        guard config.make(image) else { return }
        var rng = SplitMix64(seed: UInt64(config.bits * 1000 + config.sectorsPerCluster))
        let tree = Self.tree(&rng)
        mkdir(host, 0o755)
        for (path, content) in tree {
            if let content { writeFile(host + "/" + path, content) } else { mkdir(host + "/" + path, 0o755) }
        }
        let tops = tree.map(\.0).filter { !$0.contains("/") }.map { host + "/" + $0 }
        let copy = Shell.run(["mcopy", "-s", "-i", image] + tops + ["::/"])
        try #require(copy.status == 0, "mcopy: \(copy.output)")

        let file = ImageFile(image, writable: false)
        let volume = try FATVolume(device: file.device, readOnly: true)
        #expect(volume.info.type.rawValue == "FAT\(config.bits)")
        #expect(volume.info.bytesPerSector == config.sectorSize)
        #expect(volume.info.sectorsPerCluster == config.sectorsPerCluster)
        #expect(volume.info.label == "TESTVOL")
        #expect(volume.info.serial == 0x1234_5678)
        #expect(!volume.info.wasDirty)

        // Every directory lists exactly the host's names; every file reads back byte for byte.
        for (path, content) in tree {
            let attr = try volume.node(path)
            if let content {
                #expect(!attr.isDirectory && attr.size == UInt64(content.count), "\(path)")
                #expect(try volume.readAll(attr.id) == content, "\(path)")
                #expect(attr.mode == UInt32(S_IFREG) | 0o755)
            } else {
                #expect(attr.isDirectory && attr.mode == UInt32(S_IFDIR) | 0o755, "\(path)")
            }
        }
        for dir in [""] + tree.filter({ $0.1 == nil }).map(\.0) {
            let expected = Set(tree.map(\.0).filter { p in
                let parent = p.split(separator: "/").dropLast().joined(separator: "/")
                return parent == dir
            }.map { String($0.split(separator: "/").last!) })
            let listed = try volume.list(try volume.node(dir).id).map(\.name)
            #expect(Set(listed) == expected && listed.count == expected.count, "directory /\(dir)")
        }
        // Lookups ignore case (ASCII), like Linux vfat, and find 8.3 aliases too.
        #expect(try volume.node("CONFIG.TXT").id == (try volume.node("config.txt").id))
        #expect(try volume.node("upper.txt").size == 3)
        #expect(try volume.node("MANY/FILE NUMBER 7 WITH A LONG NAME.DAT").size == 1)
        #expect(errnoOf { _ = try volume.node("nothing-here") } == ENOENT)
        #expect(errnoOf { _ = try volume.read(volume.node("many").id, at: 0, count: 1) } == EISDIR)

        // Free space as mdir reports it.
        let mdir = Shell.run(["mdir", "-i", image, "::/"])
        let free = mdir.output.split(separator: "\n").last { $0.contains("bytes free") }
        let digits = free.map { $0.filter(\.isNumber) }.flatMap { UInt64($0) }
        let statfs = volume.statfs()
        #expect(digits == statfs.freeBlocks * UInt64(statfs.blockSize), "mdir: \(free ?? "?")")
    }

    /// A partition inside a larger image: the device is the partition's byte range.
    @Test func readsAPartitionAtAnOffset() throws {
        let scratch = Scratch()
        let image = scratch.path + "/disk.img"
        writeFile(image, [])
        truncate(image, 64 << 20)
        let mk = Shell.run(["mkfs.vfat", "-F", "32", "-n", "BOOTFS", "--offset", "8192", image, "40960"])
        try #require(mk.status == 0, "\(mk.output)")
        writeFile(scratch.path + "/cmdline.txt", Array("console=serial0 root=PARTUUID=1-02\n".utf8))
        #expect(Shell.run(["mcopy", "-i", image + "@@4M", scratch.path + "/cmdline.txt", "::/"]).status == 0)
        let file = ImageFile(image, writable: false, offset: 4 << 20, size: 40 << 20)
        let volume = try FATVolume(device: file.device, readOnly: true)
        #expect(volume.info.label == "BOOTFS")
        #expect(try volume.readAll(volume.node("cmdline.txt").id) == Array("console=serial0 root=PARTUUID=1-02\n".utf8))
        #expect(errnoOf { _ = try volume.create(parent: FATVolume.rootID, name: "x") } == EROFS)
    }
}
