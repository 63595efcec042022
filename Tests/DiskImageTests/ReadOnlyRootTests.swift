import Glibc
import Testing
@testable import DiskImage

/// squashfs and erofs made by their own tools are probed, and RootChoice takes them as roots (OpenWrt, HAOS).
@Suite("Read-only root filesystems from mksquashfs and mkfs.erofs")
struct ReadOnlyRootTests {
    /// A partition table around one filesystem file at sector 2048, plus a larger ext4-looking data partition.
    func image(with filesystem: String, dir: ScratchDirectory) throws -> (ByteArraySource, Partition) {
        let fs = try FileByteSource(path: filesystem).readAll()
        let fsSectors = (fs.count + 511) / 512 + 8
        var img = ImageBuilder(sectors: 2048 + fsSectors + 400)
        img.mbrEntry(index: 0, type: 0x83, start: 2048, count: UInt64(fsSectors))
        img.mbrEntry(index: 1, type: 0x83, start: UInt64(2048 + fsSectors), count: 400)
        img.put(fs, at: 2048 * 512)
        img.ext(at: UInt64(2048 + fsSectors) * 512, .init(logBlockSize: 0, blocks: 200))
        img.put(0x1234_5678, at: 440, width: 4)
        let table = try PartitionTable.read(img.source)
        return (img.source, table.partitions[0])
    }

    func choose(_ source: ByteArraySource, root: String) throws -> RootChoice.Decision {
        var inputs = RootChoice.Inputs(table: try PartitionTable.read(source)) {
            FilesystemProbe.probe(source, offset: $0.startByte, length: $0.sizeBytes)
        }
        inputs.kernelRoots = [KernelRoot(value: root, file: "cmdline.txt of partition 1")]
        return try RootChoice.choose(inputs)
    }

    @Test(.enabled(if: programExists("mksquashfs"), "needs mksquashfs (squashfs-tools)"))
    func squashfsRoot() throws {
        let dir = ScratchDirectory()
        let tree = dir.path + "/tree"
        mkdir(tree, 0o755)
        defer { rmdir(tree) }
        #expect(run(["mksquashfs", tree, dir.path + "/fs.sqsh", "-comp", "xz", "-b", "262144", "-noappend", "-quiet"]) == 0)
        let (source, partition) = try image(with: dir.path + "/fs.sqsh", dir: dir)
        let info = try #require(FilesystemProbe.probe(source, offset: partition.startByte, length: partition.sizeBytes))
        #expect(info.type == .squashfs)
        #expect(info.blockSize == 262144)
        let d = try choose(source, root: "PARTUUID=12345678-01")
        #expect(d.root.partition.number == 1)
        #expect(d.root.filesystem.type == .squashfs)
    }

    @Test(.enabled(if: programExists("mkfs.erofs"), "needs mkfs.erofs (erofs-utils)"))
    func erofsRoot() throws {
        let dir = ScratchDirectory()
        let tree = dir.path + "/tree"
        mkdir(tree, 0o755)
        defer { rmdir(tree) }
        // Debian 12's erofs-utils 1.5 has no -L (label): the root is named by UUID.
        #expect(run(["mkfs.erofs", "-zlz4hc", "-U", "8d3d53e3-6d49-4c38-8349-aff6859e82fd", dir.path + "/fs.erofs", tree]) == 0)
        let (source, partition) = try image(with: dir.path + "/fs.erofs", dir: dir)
        let info = try #require(FilesystemProbe.probe(source, offset: partition.startByte, length: partition.sizeBytes))
        #expect(info.type == .erofs)
        #expect(info.uuid == "8d3d53e3-6d49-4c38-8349-aff6859e82fd")
        #expect(try choose(source, root: "UUID=8D3D53E3-6D49-4C38-8349-AFF6859E82FD").root.partition.number == 1)
        // Without a root= the larger ext4 partition wins, as before.
        #expect(try choose(source, root: "/dev/nfs").root.partition.number == 2)
    }
}
