import DiskImage
import Foundation
import Glibc
import Logging
import TestSupport
import Testing
@testable import Sandbox

let imageToolsPresent: Bool = { let tools: [String] = ["/sbin/sfdisk", "/sbin/mkfs.ext4", "/sbin/mkfs.vfat", "/usr/bin/mcopy"]; return tools.allSatisfy { FileManager.default.isExecutableFile(atPath: $0) } }()

/// The daemon's root choice on images built by Tools/make-test-image (no devices: FATFS reads the boot files).
@Suite(.enabled(if: imageToolsPresent, "needs sfdisk, mkfs.ext4, mkfs.vfat, mtools"))
struct RootFinderTests {
    static let script: String = {
        var parts = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().pathComponents
        parts.removeLast(3)  // Tests/SandboxTests/RootFinderTests.swift
        return NSString.path(withComponents: parts + ["Tools", "make-test-image"])
    }()

    final class Image {
        let path: String
        init(_ kind: String) throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("rootfinder-\(UUID().uuidString).img").path
            guard Subprocess.run([RootFinderTests.script, kind, path], output: .discarded).status == 0 else {
                throw CocoaError(.fileWriteUnknown)
            }
        }
        deinit { unlink(path) }
    }

    func choose(_ image: Image, override: Int? = nil) throws -> (RootPartition, [String]) {
        let label = "rootfinder-\(UUID().uuidString.prefix(8))"
        let logger = Logger(label: label) { CollectingLogHandler(label: $0) }
        let root = try RootFinder(imageName: "img", path: image.path, override: override, logger: logger).choose()
        let lines = CollectingLogHandler.lines.withLock { $0.filter { $0.contains(label) } }
        return (root, lines)
    }

    @Test func cmdlineNamesTheSmallerPartition() throws {
        let (root, lines) = try choose(Image("boot-names-p2"))
        #expect(root.partition.number == 2)
        #expect(root.reason == "root=PARTUUID=5eed0002-02 in cmdline.txt of partition 1")
        #expect(lines.contains { $0.hasPrefix("info") && $0.hasSuffix("image img: root is partition 2 (ext4): root=PARTUUID=5eed0002-02 in cmdline.txt of partition 1") })
    }

    @Test func logicalPartitionNamedByDevicePath() throws {
        let (root, _) = try choose(Image("extended-root"))
        #expect(root.partition.number == 5)
        #expect(root.reason == "root=/dev/mmcblk0p5 in cmdline.txt of partition 1")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/mkimage")
                   && FileManager.default.isExecutableFile(atPath: "/usr/bin/mkfs.erofs"), "needs mkimage and mkfs.erofs"))
    func haosBootScriptNamesErofsSlotA() throws {
        let (root, _) = try choose(Image("haos-like"))
        #expect(root.partition.number == 2)
        #expect(root.filesystem.type == .erofs)
        #expect(root.reason == "root=PARTUUID=8d3d53e3-6d49-4c38-8349-aff6859e82fd in boot.scr of partition 1")
    }

    @Test func overrideStillWins() throws {
        let (root, _) = try choose(Image("boot-names-p2"), override: 3)
        #expect(root.partition.number == 3)
        #expect(root.reason == "--partition 3")
    }

    /// Puts a file with `text` at the top of the FAT partition starting at `sector`.
    func put(_ text: String, as name: String, in image: Image, sector: Int) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("fat-\(UUID().uuidString)").path
        defer { unlink(file) }
        #expect(FileManager.default.createFile(atPath: file, contents: Data(text.utf8)))
        let copy = Subprocess.run(["mcopy", "-o", "-i", "\(image.path)@@\(sector * 512)", file, "::\(name)"],
                                  environment: ["MTOOLS_SKIP_CHECK": "1"])
        #expect(copy.status == 0, "\(copy.output)")
    }

    /// balenaOS after an update to slot B: resinOS_uEnv.txt on resin-boot says resin_root_part=3.
    @Test func balenaRootPartOnTheBootPartition() throws {
        let image = try Image("balena-like")
        try put("resin_root_part=3\n", as: "resinOS_uEnv.txt", in: image, sector: 8192)
        let (root, _) = try choose(image)
        #expect(root.partition.number == 3)
        #expect(root.reason == "root=/dev/mmcblk0p3 in resinOS_uEnv.txt of partition 1 (resin_root_part)")
    }

    /// rpi-image-gen A/B: autoboot.txt on BOOTCONFIG gives the slot (read through FATFS).
    @Test func autobootGivesTheSlot() throws {
        let image = try Image("rpi-ab")
        #expect(try choose(image).0.slot.reason == "slot A: boot_partition=2 (boot_a) in autoboot.txt of partition 1")
        try put("[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n", as: "autoboot.txt", in: image, sector: 16384)
        #expect(try choose(image).0.slot.reason == "slot B: boot_partition=3 (boot_b) in autoboot.txt of partition 1")
    }

    /// LibreELEC: the SYSTEM squashfs file on the FAT partition; the largest rule would give STORAGE.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/mksquashfs"), "needs mksquashfs"))
    func libreelecSystemFileIsRefused() throws {
        let image = try Image("libreelec-like")
        #expect(throws: DiskImageError.rootIsAFile(partition: 1, file: "SYSTEM", largest: 2)) { try choose(image) }
        #expect(try choose(image, override: 2).0.partition.number == 2)
    }

    /// A cmdline.txt of 1 MiB of garbage: one clear warning, and the choice goes on without it.
    @Test func megabyteOfGarbageCmdline() throws {
        let image = try Image("boot-names-p2")
        let garbage = FileManager.default.temporaryDirectory.appendingPathComponent("cmdline-\(UUID().uuidString)").path
        defer { unlink(garbage) }
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        var state: UInt32 = 7
        for i in bytes.indices { state = state &* 1_103_515_245 &+ 12345; bytes[i] = UInt8(truncatingIfNeeded: state >> 16) }
        #expect(FileManager.default.createFile(atPath: garbage, contents: Data(bytes)))
        let copy = Subprocess.run(["mcopy", "-o", "-i", "\(image.path)@@\(8192 * 512)", garbage, "::cmdline.txt"],
                                  environment: ["MTOOLS_SKIP_CHECK": "1"])
        #expect(copy.status == 0, "\(copy.output)")
        let started = ContinuousClock.now
        let (root, lines) = try choose(image)
        #expect(started.duration(to: .now) < .seconds(5))
        #expect(root.partition.number == 3)
        #expect(root.reason == "the largest partition with a Linux filesystem")
        #expect(lines.filter { $0.hasPrefix("warning") } == [
            "warning \(lines.first!.split(separator: " ")[1]) image img: cmdline.txt of partition 1 is 1048576 bytes, more than the 262144 a boot configuration may have: not read",
        ])
    }
}
