import DiskImage
import Foundation
import Glibc
import LinuxBlock
import Testing
@testable import SandboxSave

/// The options read from a squashfs/erofs superblock make the same kind of filesystem again: built by the tool
/// with some options, read back, built again with what was read, the two superblocks agree on every field
/// that says how (compressor, its options, block size, flags / features, UUID).
@Suite struct ReadOnlyBuildOptionsTests {
    static func head(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        return Array(bytes[..<max(0, count)])
    }

    static func tree() throws -> String {
        let dir = NSTemporaryDirectory() + "rebuild-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/tree/etc", withIntermediateDirectories: true)
        try String(repeating: "some text to compress\n", count: 4000).write(toFile: dir + "/tree/etc/big", atomically: false, encoding: .utf8)
        try "x\n".write(toFile: dir + "/tree/etc/small", atomically: false, encoding: .utf8)
        return dir
    }

    static func program(_ name: String) -> Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/" + name) }

    @Test(.enabled(if: program("mksquashfs")), arguments: [
        ["-comp", "xz", "-b", "256K", "-Xbcj", "arm,x86", "-Xdict-size", "65536"],
        ["-comp", "gzip", "-b", "4K", "-Xcompression-level", "3", "-no-xattrs", "-no-fragments"],
        ["-comp", "lz4", "-Xhc", "-noI", "-noD", "-no-exports", "-no-duplicates"],
        ["-comp", "zstd", "-Xcompression-level", "19", "-always-use-fragments", "-noX", "-noId"],
        ["-comp", "lzo", "-Xalgorithm", "lzo1x_999", "-Xcompression-level", "5"],
    ])
    func squashfsOptionsRoundTrip(_ made: [String]) throws {
        let dir = try Self.tree()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Command.run(["mksquashfs", dir + "/tree", dir + "/a.sqsh", "-noappend", "-quiet", "-no-progress"] + made)
        let options = try ReadOnlyBuildOptions(type: .squashfs, head: Self.head(dir + "/a.sqsh"))
        #expect(options.dropsXattrs == made.contains("-no-xattrs"))
        _ = try Command.run(["mksquashfs", dir + "/tree", dir + "/b.sqsh"] + options.arguments)
        let a = Self.head(dir + "/a.sqsh"), b = Self.head(dir + "/b.sqsh")
        #expect(a[12..<16] == b[12..<16], "block size")
        #expect(a[20..<28] == b[20..<28], "compressor, block log, flags: \(options.arguments)")
        let optionsLength = a[25] & 0x04 != 0 ? 2 + Int(a[96]) : 0
        #expect(a[96..<(96 + optionsLength)] == b[96..<(96 + optionsLength)], "compressor options")
    }

    @Test(.enabled(if: program("mkfs.erofs")), arguments: [
        [String](),
        ["-zlz4hc"],
        ["-zlz4hc", "-C65536"],
        ["-zlz4"],
    ])
    func erofsOptionsRoundTrip(_ made: [String]) throws {
        let dir = try Self.tree()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Command.run(["mkfs.erofs", "--quiet", "-U", "8d3d53e3-6d49-4c38-8349-aff6859e82fd"] + made + [dir + "/a.erofs", dir + "/tree"])
        let help = try Command.run(["sh", "-c", "exec mkfs.erofs --help 2>&1"])
        let options = try ReadOnlyBuildOptions(type: .erofs, head: Self.head(dir + "/a.erofs"), erofsHelp: help)
        #expect(options.arguments.contains("-U8d3d53e3-6d49-4c38-8349-aff6859e82fd"))
        _ = try Command.run(["mkfs.erofs"] + options.arguments + [dir + "/b.erofs", dir + "/tree"])
        let a = Self.head(dir + "/a.erofs"), b = Self.head(dir + "/b.erofs")
        #expect(a[1036] == b[1036], "block size")
        #expect(a[1072..<1088] == b[1072..<1088], "UUID")
        #expect(a[1104..<1110] == b[1104..<1110], "incompatible features and algorithms: \(options.arguments)")
        #expect(a[1152..<1168] == b[1152..<1168], "compression configurations")
    }

    /// What this mkfs.erofs cannot write, or a superblock that is not one: a clear error, nothing run.
    @Test func unwritableOrBogusSuperblocksAreRefused() throws {
        var erofs = [UInt8](repeating: 0, count: 4096)
        erofs.replaceSubrange(1024..<1028, with: [0xe2, 0xe1, 0xf5, 0xe0])
        erofs[1036] = 12
        erofs[1104] = 0x3          // compressed, with algorithm configurations
        erofs[1108] = 0x8          // zstd
        #expect(throws: SaveError.self) { try ReadOnlyBuildOptions(type: .erofs, head: erofs, erofsHelp: "Available compressors are: lz4hc, lz4") }
        do {
            _ = try ReadOnlyBuildOptions(type: .erofs, head: erofs, erofsHelp: "Available compressors are: lz4hc, lz4")
        } catch {
            #expect(error.errno == ENOTSUP && error.what.contains("zstd"), "\(error)")
        }
        erofs[1036] = 14           // 16 KiB blocks, which 1.5 cannot make
        erofs[1104] = 0
        #expect(throws: SaveError.self) { try ReadOnlyBuildOptions(type: .erofs, head: erofs, erofsHelp: "") }
        var squashfs = Array("hsqs".utf8) + [UInt8](repeating: 0, count: 92)
        squashfs[28] = 4
        squashfs[20] = 9           // no such compressor
        #expect(throws: SaveError.self) { try ReadOnlyBuildOptions(type: .squashfs, head: squashfs) }
        squashfs[20] = 4
        squashfs[25] = 0x04        // compressor options said to follow, cut off
        #expect(throws: SaveError.self) { try ReadOnlyBuildOptions(type: .squashfs, head: squashfs) }
        #expect(throws: SaveError.self) { try ReadOnlyBuildOptions(type: .squashfs, head: [UInt8](repeating: 0, count: 96)) }
        #expect(throws: SaveError.self) { try ReadOnlyBuildOptions(type: .ext4, head: squashfs) }
    }
}
