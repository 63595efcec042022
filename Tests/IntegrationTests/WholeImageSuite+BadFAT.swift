import Foundation
import Glibc
import Testing

/// The byte layout of an rpi image's FAT32 boot partition (partition 1 at sector 8192), read from its boot
/// sector, for patching damage into the image before it is served.
struct FAT32Patcher {
    let fd: Int32
    let base: Int
    let bytesPerSector: Int, sectorsPerCluster: Int, reserved: Int, fatCount: Int, fatSectors: Int
    let rootCluster: UInt32, clusterCount: UInt32

    init(image: String, partitionStart: Int = 8192 * 512) throws {
        fd = open(image, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        try #require(fd >= 0, "open \(image)")
        base = partitionStart
        var bs = [UInt8](repeating: 0, count: 512)
        try #require(pread(fd, &bs, 512, off_t(base)) == 512)
        func le16(_ o: Int) -> Int { Int(bs[o]) | Int(bs[o + 1]) << 8 }
        func le32(_ o: Int) -> Int { le16(o) | le16(o + 2) << 16 }
        bytesPerSector = le16(11)
        sectorsPerCluster = Int(bs[13])
        reserved = le16(14)
        fatCount = Int(bs[16])
        fatSectors = le32(36)
        rootCluster = UInt32(le32(44))
        try #require(le16(22) == 0 && fatSectors > 0, "a FAT32 boot partition")
        let dataSectors = le32(32) - reserved - fatCount * fatSectors
        clusterCount = UInt32(dataSectors / sectorsPerCluster)
    }

    func close() { _ = Glibc.close(fd) }

    func put(_ offset: Int, _ bytes: [UInt8]) throws {
        try #require(pwrite(fd, bytes, bytes.count, off_t(base + offset)) == bytes.count)
    }

    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    /// Sets FAT entry `cluster` to `value` in every FAT copy.
    func setFAT(_ cluster: UInt32, _ value: UInt32) throws {
        for copy in 0..<fatCount {
            try put((reserved + copy * fatSectors) * bytesPerSector + 4 * Int(cluster), Self.le32(value))
        }
    }

    func clusterOffset(_ c: UInt32) -> Int {
        (reserved + fatCount * fatSectors + (Int(c) - 2) * sectorsPerCluster) * bytesPerSector
    }

    /// Offset and first cluster of the root directory entry whose 8.3 name is `name11` (first root cluster).
    func rootEntry(_ name11: String) throws -> (offset: Int, cluster: UInt32) {
        let bytes = clusterOffset(rootCluster)
        var dir = [UInt8](repeating: 0, count: sectorsPerCluster * bytesPerSector)
        try #require(pread(fd, &dir, dir.count, off_t(base + bytes)) == dir.count)
        let wanted = Array(name11.utf8)
        for i in stride(from: 0, to: dir.count, by: 32) where Array(dir[i..<i + 11]) == wanted {
            let hi = UInt32(dir[i + 20]) | UInt32(dir[i + 21]) << 8, lo = UInt32(dir[i + 26]) | UInt32(dir[i + 27]) << 8
            return (bytes + i, hi << 16 | lo)
        }
        Issue.record("no root entry \(name11)")
        throw CommandFailed(argv: ["rootEntry", name11], status: 1, output: "")
    }
}

extension WholeImageSuite {
    /// Damaged boot partitions, one per image: a corrupt BPB leaves the partition out (the root's empty
    /// mount point shows) with one log line; a looping chain, a chain past the end and directory cycles
    /// give EIO on the damaged entry only, with one log line each; a name with a byte FAT forbids is listed
    /// and read as Linux vfat does. Each time the root part of the sandbox keeps working; nothing is left.
    @Test func badFATInputIsAnErrnoAndOneLogLine() throws {
        let kinds = ["bpb", "loop", "pastend", "cycle", "name"]
        let fixture = try ServeFixture(images: kinds.map { ("bad-\($0)", "rpi", []) })
        defer { fixture.close() }
        for kind in kinds {
            let path = "\(fixture.images)/bad-\(kind).img"
            // Under Tools/vm-test the image is a link to a shared prebuilt one: patch a copy of it.
            if let shared = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
                #expect(unlink(path) == 0)
                try run(["cp", "--sparse=always", shared, path])
            }
            let fat = try FAT32Patcher(image: path)
            defer { fat.close() }
            let mtools = ["env", "MTOOLS_SKIP_CHECK=1"], at = "\(path)@@\(fat.base)"
            switch kind {
            case "bpb":
                try fat.put(44, FAT32Patcher.le32(0x0FFF_FF00))   // root cluster past the end
            case "loop", "pastend":
                // config.txt claims 8 clusters; its first continues into itself, or past the last cluster.
                let config = try fat.rootEntry("CONFIG  TXT")
                try fat.put(config.offset + 28, FAT32Patcher.le32(UInt32(8 * fat.sectorsPerCluster * fat.bytesPerSector)))
                try fat.setFAT(config.cluster, kind == "loop" ? config.cluster : fat.clusterCount + 10)
            case "cycle":
                // overlays/ is its own child: its chain loops; loopback/ points back at the root.
                _ = try run(mtools + ["mmd", "-i", at, "::/overlays", "::/loopback"])
                let overlays = try fat.rootEntry("OVERLAYS   ")
                try fat.setFAT(overlays.cluster, overlays.cluster)
                let loopback = try fat.rootEntry("LOOPBACK   ")
                try fat.put(loopback.offset + 20, [UInt8(fat.rootCluster >> 16 & 0xff), UInt8(fat.rootCluster >> 24)])
                try fat.put(loopback.offset + 26, [UInt8(fat.rootCluster & 0xff), UInt8(fat.rootCluster >> 8 & 0xff)])
            default:
                let config = try fat.rootEntry("CONFIG  TXT")
                try fat.put(config.offset, Array("CON*IG  TXT".utf8))
            }
            fixture.checksums[path] = try fixture.fingerprint(path)
        }
        try fixture.start(["--cow-size", "64M"])

        for kind in kinds {
            let image = "bad-\(kind)"
            let box = fixture.sandbox(image, "s"), boot = fixture.sandbox(image, "s") + "/boot/firmware"
            let before = fixture.log.count
            #expect(mkdir(box, 0o755) == 0, "mkdir \(image): \(String(cString: strerror(errno)))")
            switch kind {
            case "bpb":
                #expect(try FileManager.default.contentsOfDirectory(atPath: boot).isEmpty)
                #expect(fixture.waitForLog { $0.contains("\(image)/s: partition 1 (vfat) at /boot/firmware not shown") })
            case "loop", "pastend":
                #expect(FileChecks.readFile("\(boot)/cmdline.txt")?.hasPrefix("console=") == true, "the rest keeps working")
                let fd = open("\(boot)/config.txt", O_RDONLY)
                var buffer = [UInt8](repeating: 0, count: 8192)
                let n = fd >= 0 ? read(fd, &buffer, buffer.count) : -1
                let error = errno
                if fd >= 0 { close(fd) }
                #expect(n == -1 && error == EIO, "read of config.txt with a \(kind) chain: \(n) \(String(cString: strerror(error)))")
                #expect(fixture.waitForLog { $0.contains("FAT: corrupt FAT volume") && $0.contains(kind == "loop" ? "loops" : "past the end") })
            case "cycle":
                #expect(try FileManager.default.contentsOfDirectory(atPath: boot).sorted() == ["cmdline.txt", "config.txt", "loopback", "overlays"])
                #expect(opendir("\(boot)/loopback") == nil && errno == EIO, "a directory pointing back at the root")
                let dir = opendir("\(boot)/overlays")
                var failure = dir == nil ? errno : 0
                if let dir {
                    while failure == 0 {
                        errno = 0
                        if readdir(dir) == nil { failure = errno == 0 ? -1 : errno }
                    }
                    closedir(dir)
                }
                #expect(failure == EIO, "a directory whose chain loops: \(failure)")
                #expect(FileChecks.readFile("\(boot)/config.txt") == "arm_64bit=1\nenable_uart=1\n")
                #expect(fixture.waitForLog { $0.contains("directory cycle") })
                #expect(fixture.waitForLog { $0.contains("loops") })
            default:
                #expect(try FileManager.default.contentsOfDirectory(atPath: boot).sorted() == ["CON*IG.TXT", "cmdline.txt"]
                        || FileManager.default.contentsOfDirectory(atPath: boot).sorted() == ["cmdline.txt", "con*ig.txt"])
                let name = try FileManager.default.contentsOfDirectory(atPath: boot).first { $0.contains("*") } ?? "?"
                #expect(FileChecks.readFile("\(boot)/\(name)") == "arm_64bit=1\nenable_uart=1\n", "listed, so found")
                #expect(open("\(boot)/new*name", O_WRONLY | O_CREAT, 0o644) == -1 && errno == EINVAL, "new names are checked")
            }
            // The root part of the sandbox keeps working.
            #expect(FileChecks.readFile("\(box)/etc/hostname") == "raspberrypi\n")
            #expect(Self.write("\(box)/etc/written", "ok\n") && FileChecks.readFile("\(box)/etc/written") == "ok\n")
            #expect(rmdir(box) == 0, "rmdir \(image): \(String(cString: strerror(errno)))")
            let said = fixture.log.dropFirst(before).filter { $0.contains("error") || $0.contains("FAT") }
            if kind == "name" {
                #expect(said.isEmpty, "no error for a served name: \(said)")
            } else {
                #expect(!said.isEmpty && said.count <= 3, "a log line per refused access, no flood: \(said)")
            }
        }
    }
}
