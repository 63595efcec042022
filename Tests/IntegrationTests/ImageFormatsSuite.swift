import Foundation
import Glibc
import Testing

/// One folder of images as they are downloaded (issue 25, items 1 and 2): Fedora's .raw.xz, a Raspbian
/// .zip, a Yocto .wic.bz2, a cloud .qcow2, an OpenWrt .img.gz with fwtool metadata after the stream, a
/// .7z, a zip holding two images, a .tgz and a zip holding an .img.xz (as Volumio and others ship); each built from one test image with the real tools, each giving a
/// sandbox of that image's root. Hostile files in the same folder (a qcow2 backed by /etc/shadow, a vmdk
/// whose extent is /dev/vda, a zip bomb, a tar whose image is a symlink, a zip holding only a qcow2.xz) each give one errno and one log
/// line, and leave nothing in the cache and no device.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct ImageFormatsSuite {
    static let marker = "formats-marker"
    /// (NAME, file, how it is made in IMAGES_DIR from base.img).
    static let served: [(String, String, String)] = [
        ("fedora", "fedora.raw.xz", "xz -T2 -3 -c base.img > fedora.raw.xz"),
        ("raspbian", "raspbian.zip", "cp base.img 2019-09-26-raspbian-buster.img && zip -q -1 raspbian.zip 2019-09-26-raspbian-buster.img && rm 2019-09-26-raspbian-buster.img"),
        ("yocto", "yocto.wic.bz2", "bzip2 -1 -c base.img > yocto.wic.bz2"),
        ("cloud", "cloud.qcow2", "qemu-img convert -f raw -O qcow2 -c base.img cloud.qcow2"),
        ("openwrt", "openwrt.img.gz", #"gzip -1 -c base.img > openwrt.img.gz && printf '{"metadata_version":"1.1","supported_devices":["rpi-4"]}FWx0\0\0\0\x58' >> openwrt.img.gz"#),
        ("dietpi", "dietpi.7z", "cp base.img DietPi_RPi.img && 7z a -bd -mx=1 dietpi.7z DietPi_RPi.img >/dev/null && rm DietPi_RPi.img"),
        ("two", "two.zip", "cp base.img a-large.img && truncate -s 1M b-small.img && zip -q -1 two.zip b-small.img a-large.img && rm a-large.img b-small.img"),
        ("rootfs", "rootfs.tgz", "cp base.img disk.raw && tar -czf rootfs.tgz disk.raw && rm disk.raw"),
        ("volumio", "volumio.zip", "xz -T2 -3 -c base.img > volumio-3.0.img.xz && zip -q -0 volumio.zip volumio-3.0.img.xz && rm volumio-3.0.img.xz"),
    ]
    /// (NAME, file, how it is made, errno, what the log line says).
    static let hostile: [(String, String, String, Int32, String)] = [
        ("shadow", "shadow.qcow2", "qemu-img create -q -f qcow2 -u -b /etc/shadow -F raw shadow.qcow2 256M", EPERM, "names another file (/etc/shadow)"),
        ("vda", "vda.vmdk", #"printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\nRW 131072 FLAT "/dev/vda" 0\n' > vda.vmdk"#,
         EPERM, "only a single-file sparse vmdk"),
        ("bomb", "bomb.zip", "truncate -s 2G bomb.img && zip -q -9 bomb.zip bomb.img && rm bomb.img", ENOSPC, "declares 2147483648 bytes for bomb.img"),
        ("link", "link.tar", "ln -s /etc/shadow link.img && tar -cf link.tar link.img && rm link.img", EPERM, "link.img is not a regular file"),
        ("nested", "nested.zip", "qemu-img convert -f raw -O qcow2 base.img haos.qcow2 && xz -T2 -3 haos.qcow2 && zip -q -0 nested.zip haos.qcow2.xz && rm haos.qcow2.xz",
         EPERM, "holds no disk image"),
    ]

    static func cacheFiles(_ fixture: ServeFixture) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: fixture.work + "/cache")) ?? []).sorted()
    }

    @Test func everyDownloadedFormatGivesItsRootAndHostileFilesNothing() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        let rootDir = fixture.work + "/root"
        try FileManager.default.createDirectory(atPath: rootDir, withIntermediateDirectories: true)
        try Data("served\n".utf8).write(to: URL(fileURLWithPath: rootDir + "/" + Self.marker))
        try run([Paths.makeTestImage, "rpi", fixture.images + "/base.img", "--root-dir", rootDir])
        for command in Self.served.map(\.2) + Self.hostile.map(\.2) { try run(["sh", "-c", "cd '\(fixture.images)' && \(command)"]) }
        try FileManager.default.removeItem(atPath: fixture.images + "/base.img")
        for file in try FileManager.default.contentsOfDirectory(atPath: fixture.images) {
            fixture.checksums[fixture.images + "/" + file] = try fixture.fingerprint(fixture.images + "/" + file)
        }
        try fixture.start(["--cache-dir", fixture.work + "/cache", "--cache-max", "1G"])
        let names = try FileManager.default.contentsOfDirectory(atPath: fixture.mountpoint).sorted()
        #expect(names == (Self.served.map(\.0) + Self.hostile.map(\.0)).sorted())
        // The hostile ones first: no sandbox is live, so any device or mount left is theirs.
        for (name, file, _, expected, _) in Self.hostile {
            #expect(CompressedImageSuite.mkdirErrno(fixture.sandbox(name, "s")) == expected, "\(file)")
            #expect(fixture.waitForLog { $0.contains("\(name)/sandboxes/s failed") }, "\(file)")
            #expect(!Self.cacheFiles(fixture).contains { $0.hasPrefix(name + ".") }, "\(file) left \(Self.cacheFiles(fixture))")
            #expect(HostileInputSuite.residue(fixture).isEmpty, "\(file): \(HostileInputSuite.residue(fixture))")
        }
        var figures: [String] = []
        for (name, file, _) in Self.served {
            let sandbox = fixture.sandbox(name, "s")
            let cold = ContinuousClock.now
            #expect(CompressedImageSuite.mkdirErrno(sandbox) == 0, "mkdir of \(file)")
            let coldTime = cold.duration(to: .now)
            let warm = ContinuousClock.now
            #expect(CompressedImageSuite.mkdirErrno(fixture.sandbox(name, "second")) == 0, "second mkdir of \(file)")
            figures.append("\(file): first mkdir (cold cache) \(coldTime), second \(warm.duration(to: .now))")
            #expect(rmdir(fixture.sandbox(name, "second")) == 0)
            #expect(FileChecks.readFile("\(sandbox)/\(Self.marker)") == "served\n", "\(file): the image's root")
            try FileChecks.writeFile("\(sandbox)/\(Self.marker)", "changed in \(name)\n")
            #expect(FileChecks.readFile("\(sandbox)/\(Self.marker)") == "changed in \(name)\n")
        }
        print("ImageFormatsSuite (256 MiB rpi image, --engine \(Environment.engine)):\n  " + figures.joined(separator: "\n  "))
        // Every served image is in the cache, sparse; nothing half made is.
        let cached = Self.cacheFiles(fixture)
        #expect(cached.filter { $0.hasSuffix(".img") }.count == Self.served.count, "\(cached)")
        #expect(!cached.contains { $0.hasSuffix(".partial") }, "\(cached)")
        for file in cached where file.hasSuffix(".img") {
            let info = FileChecks.stat(fixture.work + "/cache/" + file)!
            #expect(info.st_blocks * 512 < info.st_size / 4, "\(file) is sparse")
        }
        for (name, _, _) in Self.served { #expect(rmdir(fixture.sandbox(name, "s")) == 0) }
        HostileInputSuite.stopAndDrain(fixture)
        for (name, file, _, _, says) in Self.hostile {
            let said = fixture.log.filter { $0.contains("\(name)/sandboxes/s failed") }
            #expect(said.count == 1 && said[0].contains(says), "\(file): \(said)")
        }
        #expect(fixture.log.filter { $0.contains("ignoring") && $0.contains("after the end of the gzip data") }.count == 1)
        #expect(fixture.log.filter { $0.contains("holds 2 disk images (b-small.img, a-large.img); serving the largest, a-large.img") }.count == 1)
        #expect(fixture.log.filter { $0.contains("image cloud: converting") }.count == 1)
        #expect(fixture.log.filter { $0.contains("image volumio: decompressing") && $0.contains("(xz,") }.count == 1)
        #expect(fixture.log.filter { $0.contains("image nested: ignoring haos.qcow2.xz in") && $0.contains("is not read") }.count == 1)
    }
}
