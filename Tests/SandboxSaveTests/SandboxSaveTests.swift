import DiskImage
import Foundation
import Glibc
import LinuxBlock
import TestSupport
import Testing
@testable import SandboxSave

private func temporary(_ name: String) -> String {
    NSTemporaryDirectory() + "sandboxsave-\(UUID().uuidString.prefix(8))-\(name)"
}

@Suite struct SparseCopyTests {
    @Test func copiesDataSkipsHolesAndZeroBlocks() throws {
        let source = temporary("src"), output = temporary("out")
        defer { unlink(source); unlink(output) }
        let fd = open(source, O_CREAT | O_RDWR, 0o644)
        defer { close(fd) }
        let zeros = [UInt8](repeating: 0, count: 8 << 20), data = [UInt8](repeating: 7, count: 4096)
        #expect(pwrite(fd, zeros, zeros.count, 0) == zeros.count, "8 MiB of written zeros")
        #expect(pwrite(fd, data, data.count, 3 << 20) == data.count)
        #expect(pwrite(fd, data, data.count, 100 << 20) == data.count, "after a hole")
        #expect(ftruncate(fd, 200 << 20) == 0)
        let out = open(output, O_CREAT | O_RDWR, 0o644)
        defer { close(out) }
        var calls = 0
        try SparseCopy.copy(from: fd, to: out, size: 200 << 20) { _ in calls += 1; return true }
        var info = stat()
        #expect(fstat(out, &info) == 0)
        #expect(info.st_size == 200 << 20)
        #expect(info.st_blocks * 512 <= 64 << 10, "only the two data blocks are allocated: \(info.st_blocks * 512)")
        #expect(try run(["cmp", source, output]).status == 0)
        #expect(calls > 1)
    }

    @Test func aProgressAnswerOfFalseCancels() throws {
        let source = temporary("src"), output = temporary("out")
        defer { unlink(source); unlink(output) }
        let fd = open(source, O_CREAT | O_RDWR, 0o644), out = open(output, O_CREAT | O_RDWR, 0o644)
        defer { close(fd); close(out) }
        #expect(pwrite(fd, [UInt8](repeating: 1, count: 4 << 20), 4 << 20, 0) == 4 << 20)
        #expect(throws: SaveError.self) { try SparseCopy.copy(from: fd, to: out, size: 4 << 20) { _ in false } }
    }
}

@Suite struct PartitionTableRewriteTests {
    /// 8192 sectors shrinks the last partition (--shrink), 122880 grows it and the file past the old end
    /// (changes that do not fit).
    @Test(arguments: ["dos", "gpt"], [UInt64(8192), 122880])
    func resizesTheLastPartitionAndKeepsEveryIdentifier(label: String, sectors: UInt64) throws {
        let image = temporary("disk.img")
        defer { unlink(image) }
        try run(["truncate", "-s", "64M", image])
        try run(["sh", "-c", "printf 'label: \(label)\\n2048,20480\\n22528,\\n' | sfdisk -q --no-reread --no-tell-kernel \"$1\"", "sh", image])
        let before = try run(["sfdisk", "-d", image]).output
        let table = try PartitionTable.read(FileByteSource(path: image))
        let last = try #require(table.partitions.last)
        let fd = open(image, O_RDWR)
        defer { close(fd) }
        let size = try PartitionTableRewrite.setSize(of: last, to: sectors, image: image, fd: fd, scheme: table.scheme,
                                                     scratch: NSTemporaryDirectory())
        #expect(size == (22528 + sectors) * 512 + (label == "gpt" ? 33 * 512 : 0))
        var info = stat()
        #expect(fstat(fd, &info) == 0 && UInt64(info.st_size) == size)
        #expect(try run(["sfdisk", "-V", image]).status == 0)
        let after = try run(["sfdisk", "-d", image]).output
        #expect(after.contains("size=\(String(repeating: " ", count: max(0, 12 - "\(sectors)".count)))\(sectors)") || after.contains("size=\(sectors)"), "\(after)")
        let ids = { (dump: String) in dump.split(separator: "\n").filter { $0.hasPrefix("label-id") || $0.contains("uuid=") || $0.contains("type=") }
            .map { $0.split(separator: ",").filter { !$0.contains("size=") }.joined() } }
        #expect(ids(after) == ids(before))
        let reread = try PartitionTable.read(FileByteSource(path: image))
        #expect(reread.partitions.last?.sizeBytes == sectors * 512)
    }

    @Test func onlyTheLastPartitionCanChangeSize() throws {
        let table = PartitionTable(scheme: .mbr, partitions: [
            Partition(number: 1, startByte: 1 << 20, sizeBytes: 100 << 20, typeName: "Linux", mbrType: 0x83),
            Partition(number: 2, startByte: 101 << 20, sizeBytes: 10 << 20, typeName: "FAT", mbrType: 0x0c),
        ], diskSize: 200 << 20)
        #expect(!PartitionTableRewrite.isLast(table.partitions[0], in: table))
        #expect(PartitionTableRewrite.isLast(table.partitions[1], in: table))
    }
}

@discardableResult
private func run(_ argv: [String]) throws -> (status: Int32, output: String) { Subprocess.run(argv, output: .stdoutOnly) }
