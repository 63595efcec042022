import Foundation
import Glibc
import Testing

/// The rest of the contract on compressed images: pristine/, diff, save and run as on the plain image
/// (through the shared cache file, which nothing writes), and a SIGTERM while an image is decompressed.
extension CompressedImageSuite {
    @Test func pristineDiffSaveAndRunWorkAsOnThePlainImage() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        try Self.makeCompressed(fixture, "pi", "xz-blocks")
        // For run: a native root whose shell is static busybox, a whole-disk ext4, compressed by zstd.
        let tree = try RunSuite.busyboxTree(in: fixture.work, name: "box-tree")
        try Self.makeCompressed(fixture, "box", "zst", kind: "whole-ext4", extra: ["--root-dir", tree, "--size", "32M"])
        try fixture.start(["--cache-dir", Self.cache(fixture)])

        // pristine/ before any sandbox: the image as it is, boot partition included, read-only.
        let pristine = "\(fixture.mountpoint)/pi/pristine"
        #expect(FileChecks.readFile("\(pristine)/home/pi/readme.txt") == "Welcome to the test image.\n")
        #expect(FileChecks.readFile("\(pristine)/boot/firmware/config.txt") == "arm_64bit=1\nenable_uart=1\n")
        #expect(open("\(pristine)/etc/new", O_WRONLY | O_CREAT, 0o644) == -1 && errno == EROFS)
        #expect(unlink("\(pristine)/boot/firmware/config.txt") == -1 && errno == EROFS)
        let cached = try #require(Self.cacheFiles(fixture).first { $0.hasPrefix("pi.") && $0.hasSuffix(".img") },
                                  "pristine/ prepared the cache file: \(Self.cacheFiles(fixture))")
        let cachePath = "\(Self.cache(fixture))/\(cached)"
        let cacheSum = try fixture.fingerprint(cachePath)

        // diff: a fresh sandbox has none; every kind of change is listed as on the plain image (DiffSuite).
        let sandbox = fixture.sandbox("pi", "s")
        #expect(mkdir(sandbox, 0o755) == 0)
        try ChangeFixture.makeAndExpectExactDiff(in: sandbox)
        #expect(FileChecks.readFile("\(pristine)/home/pi/readme.txt") == "Welcome to the test image.\n", "pristine/ unchanged")
        #expect(FileChecks.readFile("\(pristine)/etc/hostname") == "raspberrypi\n")

        // save: a clean image holding exactly the sandbox's tree (SaveSuite's checks).
        let output = fixture.work + "/out.img"
        let saved = try run([Paths.binary, "save", "--quiet", sandbox, output], allowFailure: true)
        try #require(saved.status == 0, "save: \(saved.output)")
        #expect(!FileManager.default.fileExists(atPath: output + ".partial"))
        #expect(try SaveChecks.fsckRoot(output, work: fixture.work), "e2fsck -fn of the saved root partition")
        #expect(try SaveChecks.fsckBoot(output, work: fixture.work), "fsck.fat -n of the saved boot partition")
        #expect(rename(output, fixture.images + "/saved.img") == 0)
        let copy = fixture.sandbox("saved", "c")
        #expect(mkdir(copy, 0o755) == 0)
        let copyDiff = try ChangeFixture.diff(copy)
        #expect(copyDiff.status == 0 && copyDiff.output.isEmpty, "a fresh sandbox of the output has no changes: \(copyDiff.output)")
        try SaveChecks.expectSameTree(copy, sandbox)
        #expect(rmdir(copy) == 0)

        // run: the command runs in the sandbox (PID 1 is bubblewrap's init), its write lands there and in diff.
        let box = fixture.sandbox("box", "r")
        #expect(mkdir(box, 0o755) == 0)
        let ran = try RunSuite.run(box, ["sh", "-c", "echo native > /tmp/ran; read comm < /proc/1/comm; echo $comm; exit 4"])
        #expect(ran == (4, "bwrap\n"), "\(ran)")
        #expect(FileChecks.readFile("\(box)/tmp/ran") == "native\n")
        #expect(try ChangeFixture.diff(box).output.split(separator: "\n").contains("added /tmp/ran"))
        #expect(rmdir(box) == 0, "rmdir right after run: \(String(cString: strerror(errno)))")

        #expect(rmdir(sandbox) == 0)
        #expect(try fixture.fingerprint(cachePath) == cacheSum, "the shared cache file is never written")
        #expect(fixture.stop() == 0)
        #expect(fixture.log.filter { $0.contains("image pi: decompressing") }.count == 1, "pristine/ and the sandbox share one")
    }

    /// SIGTERM while a mkdir waits for a decompression (or a qcow2's conversion by qemu-img): the daemon
    /// cancels it, the mkdir fails, and the daemon exits at once with nothing cached (no .partial, no
    /// entry) and no device or mount left.
    @Test(arguments: ["xz-blocks", "qcow2"])
    func sigtermWhilePreparingStopsPromptlyLeavingNothing(kind: String) throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        if kind == "qcow2" {
            try run([Paths.makeTestImage, "rpi", fixture.work + "/r.img"])
            try run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", fixture.work + "/r.img", fixture.images + "/r.qcow2"])
            fixture.checksums[fixture.images + "/r.qcow2"] = try fixture.fingerprint(fixture.images + "/r.qcow2")
        } else {
            try Self.makeCompressed(fixture, "r", kind)
        }
        let gate = fixture.work + "/gate"
        #expect(mkfifo(gate, 0o600) == 0)
        try fixture.start(["--cache-dir", Self.cache(fixture)], environment: ["IMGSANDBOX_TEST_PREPARE_GATE": gate])
        // Debug builds only: without the seam the FIFO below would never be opened by the daemon.
        try #require(fixture.waitForLog { $0.contains("test seam IMGSANDBOX_TEST_PREPARE_GATE") }, "a debug build of imgsandbox")
        let waiting = try Self.background(["mkdir", fixture.sandbox("r", "a")])
        // Opening the FIFO returns once the decompression is held at its gate (after its first output; a
        // conversion once qemu-img runs).
        let writer = open(gate, O_WRONLY)
        #expect(writer >= 0)
        var released = false
        defer { if !released { close(writer) } }
        #expect(Self.cacheFiles(fixture).contains { $0.hasSuffix(".partial") }, "in progress: \(Self.cacheFiles(fixture))")
        let status = try run([Paths.binary, "status", "--json", fixture.mountpoint]).output
        let preparing = (try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any])?["preparing"] as? [[String: Any]]
        #expect(preparing?.first?["format"] as? String == (kind == "qcow2" ? "qcow2" : "xz"), "\(status)")
        #expect(preparing?.first?["bytes_total"] as? Int == 256 << 20, "\(status)")
        let pid = try #require(fixture.pid)
        #expect(kill(pid, SIGTERM) == 0)
        #expect(fixture.waitForLog { $0.contains("image r: cancelling its preparation") })
        // Released: the decompression stops at its next step instead of going on to the end.
        let releasedAt = ContinuousClock.now
        close(writer)
        released = true
        #expect(fixture.waitForExit() == 0)
        let seconds = releasedAt.duration(to: .now).components.seconds
        #expect(seconds < 10, "the daemon took \(seconds) s to stop")
        waiting.waitUntilExit()
        #expect(waiting.terminationStatus != 0, "the waiting mkdir fails")
        #expect(Self.cacheFiles(fixture).isEmpty, "nothing cached: \(Self.cacheFiles(fixture))")
        #expect(!fixture.log.contains { $0.contains("image r: ready in") })
        #expect(fixture.log.contains { $0.contains("preparation cancelled") }, "the mkdir's failure is logged")
    }
}
