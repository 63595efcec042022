import Foundation
import Glibc
import LinuxBlock
import Testing

/// Changes that do not fit a partition of the image: the last partition and the file grow; a partition
/// that is not the last cannot, and the save stops with ENOSPC leaving nothing behind.
extension SaveSuite {
    @Test func changesBiggerThanTheRootGrowThePartitionAndTheFile() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        // A dm snapshot spends more COW than the bytes written: room for 200 MiB and its metadata.
        try fixture.start(["--cow-size", "512M"])
        let sandbox = fixture.sandbox("pi", "g")
        #expect(mkdir(sandbox, 0o755) == 0)
        // The image's root has under 190 MiB: 200 MiB cannot fit it.
        try FileChecks.writeBig("\(sandbox)/big", mebibytes: 200, seed: 9)
        try FileChecks.writeFile("\(sandbox)/etc/hostname", "grown\n")
        let source = fixture.images + "/pi.img", output = fixture.work + "/grown.img"
        let sourceSum = try fixture.fingerprint(source)
        try SaveChecks.saveAndExpectGrowth(sandbox, source: source, output: output)
        #expect(try fixture.fingerprint(source) == sourceSum)
        #expect(try run(["sfdisk", "-V", output]).status == 0)
        #expect(try SaveChecks.fsckRoot(output, work: fixture.work))
        #expect(try SaveChecks.fsckBoot(output, work: fixture.work))
        // Only the root's size changed: the same identifiers and the boot partition where it was.
        #expect(try SaveChecks.table(output, resized: 2) == SaveChecks.table(source, resized: 2))
        try SaveChecks.expectServedOutputHolds(output, fixture: fixture, from: sandbox, hostname: "grown\n", bigFile: "big")
        #expect(fixture.stop() == 0)
    }

    @Test func aLastHomePartitionGrowsWhenItsChangesDoNotFit() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi-home", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("pi", "g")
        #expect(mkdir(sandbox, 0o755) == 0)
        // /home is the last partition (about 60 MiB, the root before it): 80 MiB cannot fit it.
        try FileChecks.writeBig("\(sandbox)/home/pi/big", mebibytes: 80, seed: 5)
        try FileChecks.writeFile("\(sandbox)/etc/hostname", "grown-home\n")
        let source = fixture.images + "/pi.img", output = fixture.work + "/grown.img"
        try SaveChecks.saveAndExpectGrowth(sandbox, source: source, output: output)
        #expect(try run(["sfdisk", "-V", output]).status == 0)
        #expect(try SaveChecks.table(output, resized: 3) == SaveChecks.table(source, resized: 3), "only /home's size changed")
        #expect(try SaveChecks.fsck(output, work: fixture.work, partition: 1, ["e2fsck", "-fn"]), "e2fsck -fn of the saved root")
        #expect(try SaveChecks.fsck(output, work: fixture.work, partition: 2, ["e2fsck", "-fn"]), "e2fsck -fn of the grown /home")
        #expect(fixture.waitForLog { $0.contains("partition 3 (/home) had free; it and the file grew") })
        try SaveChecks.expectServedOutputHolds(output, fixture: fixture, from: sandbox, hostname: "grown-home\n",
                                               bigFile: "home/pi/big")
        #expect(fixture.stop() == 0)
    }

    @Test func aPartitionThatIsNotLastAndDoesNotFitStopsTheSave() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi-home", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("pi", "n")
        #expect(mkdir(sandbox, 0o755) == 0)
        // The root (128 MiB, partition 2) has /home after it: 150 MiB more cannot fit, and it cannot grow.
        try FileChecks.writeBig("\(sandbox)/big", mebibytes: 150, seed: 6)
        let output = fixture.work + "/out.img"
        let failed = try run([Paths.binary, "save", "--quiet", sandbox, output], allowFailure: true)
        #expect(failed.status != 0)
        #expect(failed.output.contains("partition 2 (/) lacks") && failed.output.contains("No space left"), "says why: \(failed.output)")
        #expect(fixture.waitForLog { $0.contains("partition 2 (/) lacks") })
        let lines = fixture.log.filter { $0.contains("partition 2 (/) lacks") }
        #expect(lines.count == 1 && lines[0].contains(" MiB for the changes and is not the last partition"), "one log line: \(lines)")
        #expect(!FileManager.default.fileExists(atPath: output) && !FileManager.default.fileExists(atPath: output + ".partial"),
                "no output and no partial file")
        #expect(LoopDevice.attached().filter { $0.backingFile.hasPrefix(output) }.isEmpty, "no loop device on the partial file")
        try FileChecks.writeFile("\(sandbox)/etc/hostname", "still\n")
        #expect(rmdir(sandbox) == 0, "nothing holds the sandbox after a failed save")
        #expect(fixture.stop() == 0)
    }
}

extension SaveChecks {
    /// `save` of `sandbox` to `output` succeeds, and the output is at least 10 MiB bigger than `source`.
    static func saveAndExpectGrowth(_ sandbox: String, source: String, output: String) throws {
        let saved = try run([Paths.binary, "save", "--quiet", sandbox, output], allowFailure: true)
        try #require(saved.status == 0, "save: \(saved.output)")
        let sourceFile = URL(fileURLWithPath: source).resolvingSymlinksInPath().path
        let sourceSize = try #require(FileChecks.stat(sourceFile)?.st_size), grownSize = try #require(FileChecks.stat(output)?.st_size)
        #expect(grownSize > sourceSize + (10 << 20), "grown \(grownSize) vs \(sourceSize)")
    }

    /// The grown `output`, served as image "grown": a sandbox of it holds `hostname` and `bigFile` as
    /// `sandbox` does, and shows no changes.
    static func expectServedOutputHolds(_ output: String, fixture: ServeFixture, from sandbox: String, hostname: String,
                                        bigFile: String) throws {
        #expect(rename(output, fixture.images + "/grown.img") == 0)
        let copy = fixture.sandbox("grown", "c")
        #expect(mkdir(copy, 0o755) == 0)
        #expect(FileChecks.readFile("\(copy)/etc/hostname") == hostname)
        #expect(try fixture.sha256("\(copy)/\(bigFile)") == fixture.sha256("\(sandbox)/\(bigFile)"))
        let fresh = try ChangeFixture.diff(copy)
        #expect(fresh.status == 0 && fresh.output.isEmpty, "a fresh sandbox of the grown output has no changes: \(fresh.output)")
    }

    /// `sfdisk -d` of the image, its own path written IMG, the size of partition `resized` left out (and the
    /// last usable LBA, which follows the file's size).
    static func table(_ path: String, resized: Int) throws -> [String] {
        try run(["sfdisk", "-d", path]).output.split(separator: "\n")
            .filter { !$0.hasPrefix("device:") && !$0.hasPrefix("last-lba:") }
            .map { line in
                let named = line.replacingOccurrences(of: path, with: "IMG")
                return named.hasPrefix("IMG\(resized) ") ? named.replacing(/size= *[0-9]+/, with: "size") : named
            }
    }
}
