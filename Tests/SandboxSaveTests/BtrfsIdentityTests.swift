import Foundation
import Glibc
import LinuxBlock
import Testing
@testable import SandboxSave

/// The btrfs identity save writes back after `btrfstune -m`: btrfs-progs' own tools are the oracle (the superblock
/// dump and `btrfs check`), on a filesystem in a file (mkfs.btrfs and btrfstune take files; no device needed).
@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/btrfstune")))
struct BtrfsIdentityTests {
    /// A 300 MiB btrfs (superblock copies at 64 KiB and 64 MiB) with a file in it.
    static func make(_ extra: [String] = []) throws -> (dir: String, file: String) {
        let dir = NSTemporaryDirectory() + "btrfs-identity-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/tree", withIntermediateDirectories: true)
        try "kept\n".write(toFile: dir + "/tree/file", atomically: false, encoding: .utf8)
        let file = dir + "/fs.img"
        _ = try Command.run(["truncate", "-s", "300M", file])
        _ = try Command.run(["mkfs.btrfs", "-q", "--rootdir", dir + "/tree"] + extra + [file])
        return (dir, file)
    }

    /// Fields of superblock copy `copy` (0: at 64 KiB, 1: at 64 MiB) as btrfs-progs reads them.
    static func dump(_ file: String, copy: Int = 0) throws -> (fsid: String, metadataUUID: String, incompat: String) {
        let text = try Command.run(["btrfs", "inspect-internal", "dump-super", "-s", "\(copy)", file])
        let field = { (name: String) in
            text.split(separator: "\n").first { $0.hasPrefix(name + "\t") || $0.hasPrefix(name + " ") }
                .map { String($0.dropFirst(name.count).trimmingCharacters(in: .whitespaces)) } ?? ""
        }
        return (field("fsid"), field("metadata_uuid"), field("incompat_flags"))
    }

    @Test func theImagesFsidComesBackAfterATemporaryOne() throws {
        let (dir, file) = try Self.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let before = try Self.dump(file)
        let identity = try BtrfsIdentity.read(device: file)
        #expect(!identity.hasMetadataUUID)
        _ = try Command.run(["btrfstune", "-m", file])
        let temporary = try Self.dump(file)
        try #require(temporary.fsid != before.fsid && temporary.metadataUUID == before.fsid, "btrfstune -m: \(temporary)")
        #expect(try BtrfsIdentity.read(device: file).hasMetadataUUID)

        try identity.write(device: file)
        let after = try Self.dump(file)
        #expect(after.fsid == before.fsid && after.incompat == before.incompat, "\(after) vs \(before)")
        #expect(try BtrfsIdentity.read(device: file) == identity)
        let copy = try Self.dump(file, copy: 1)
        #expect(copy.fsid == before.fsid && copy.incompat == before.incompat, "the copy at 64 MiB: \(copy)")
        _ = try Command.run(["btrfs", "check", "--readonly", file])
    }

    /// An image that itself carries a metadata_uuid (btrfstune -m once already) keeps both UUIDs and the flag.
    @Test func anImageWithItsOwnMetadataUUIDKeepsIt() throws {
        let (dir, file) = try Self.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Command.run(["btrfstune", "-m", file])
        let before = try Self.dump(file)
        let identity = try BtrfsIdentity.read(device: file)
        #expect(identity.hasMetadataUUID)
        _ = try Command.run(["btrfstune", "-m", file])
        try #require(try Self.dump(file).fsid != before.fsid)
        try identity.write(device: file)
        let after = try Self.dump(file)
        #expect(after.fsid == before.fsid && after.metadataUUID == before.metadataUUID && after.incompat == before.incompat,
                "\(after) vs \(before)")
        _ = try Command.run(["btrfs", "check", "--readonly", file])
    }

    /// A checksum other than crc32c: refused before anything is changed (its superblocks could not be written back).
    @Test func anotherChecksumIsRefused() throws {
        let (dir, file) = try Self.make(["--csum", "xxhash"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect { try BtrfsIdentity.read(device: file) } throws: { ($0 as? SaveError)?.errno == ENOTSUP }
    }

    /// A damaged superblock is not taken for an identity.
    @Test func aSuperblockFailingItsChecksumIsRefused() throws {
        let (dir, file) = try Self.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fd = open(file, O_RDWR)
        var byte: UInt8 = 0x5A
        #expect(pwrite(fd, &byte, 1, 65536 + 0x100) == 1)
        close(fd)
        #expect { try BtrfsIdentity.read(device: file) } throws: { ($0 as? SaveError)?.errno == EIO }
    }
}
