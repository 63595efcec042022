import Foundation
import Glibc
import LinuxBlock
import Sandbox
import Testing

/// Crash safety and the COW budget (issue 5): a SIGKILLed daemon's objects are swept by the next serve,
/// every way of stopping tears everything down, a full COW store is reported and contained, and (dm, in
/// the VM) a COW store grows up to --cow-max.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct ReliabilitySuite {
    /// What a serve instance with this pid still holds, found by the names and places it uses.
    static func leftovers(of pid: Int32) -> [String] {
        var found: [String] = []
        let names = InstanceNames(pid: pid)
        for mount in Mount.mountPoints() where mount.source == names.fsName || names.holds(path: mount.mountPoint) {
            found.append("mount \(mount.mountPoint) (\(mount.source))")
        }
        found += Residue.dmDevices(of: pid).map { "dm \($0)" }
        if access(names.runDirectory, F_OK) == 0 { found.append("run directory \(names.runDirectory)") }
        return found
    }

    /// `withUnsweepableNeighbour`: a machine with an old leak (UnsweepableNeighbour) sweeps the same.
    @Test(arguments: [false, true])
    func sigkillWithThreeSandboxesThenServeAgainSweepsOnlyTheDeadInstance(withUnsweepableNeighbour: Bool) throws {
        let neighbour = withUnsweepableNeighbour ? try UnsweepableNeighbour() : nil
        defer { neighbour?.remove() }
        // ext4-1k: on dm its sandbox has a 512-byte-sector loop over the COW store, which the sweep must
        // release too (fixture.close()'s residue check looks for it by its label).
        let fixture = try ServeFixture(images: [("pi", "rpi", []), ("disk", "gpt", []), ("small", "ext4-1k", [])])
        defer { fixture.close() }
        // A second, live daemon whose objects the sweep must leave alone.
        let bystander = try ServeFixture(images: [("pi", "rpi", [])])
        defer { bystander.close() }
        try bystander.start()
        #expect(mkdir(bystander.sandbox("pi", "keep"), 0o755) == 0)
        try FileChecks.writeFile("\(bystander.sandbox("pi", "keep"))/mine", "bystander")

        try fixture.start()
        for (image, name) in [("pi", "a"), ("pi", "b"), ("disk", "c"), ("small", "d")] {
            #expect(mkdir(fixture.sandbox(image, name), 0o755) == 0, "mkdir \(image)/\(name): \(String(cString: strerror(errno)))")
            try FileChecks.writeFile("\(fixture.sandbox(image, name))/note", name)
        }
        let dead = try #require(fixture.pid)
        #expect(Self.leftovers(of: dead).count >= 4, "the live instance shows its FUSE and hidden mounts")

        #expect(fixture.stop(with: SIGKILL) == SIGKILL)
        let stale = Self.leftovers(of: dead)
        #expect(!stale.isEmpty, "SIGKILL leaves the kernel objects behind: \(stale)")

        try fixture.start()
        #expect(fixture.pid != dead)
        #expect(Self.leftovers(of: dead).isEmpty, "still there after the sweep: \(Self.leftovers(of: dead)); sweep: \(fixture.log.filter { $0.contains("swe") })")
        #expect(fixture.log.contains { $0.contains("swept") && $0.contains("\(dead)") })
        // The only thing left under the fixture's folder is the new daemon's own FUSE mount.
        let residue = Residue.find(work: fixture.work, instance: dead).filter { $0 != "mount \(fixture.mountpoint)" }
        #expect(residue.isEmpty, "left behind by the dead instance: \(residue); sweep: \(fixture.log.filter { $0.contains("swe") })")

        // The new daemon works on the same mountpoint, starting clean.
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.sandbox("pi", "")).isEmpty)
        #expect(mkdir(fixture.sandbox("pi", "a"), 0o755) == 0)
        #expect(!FileManager.default.fileExists(atPath: "\(fixture.sandbox("pi", "a"))/note"))
        // The bystander was not touched.
        #expect(FileChecks.readFile("\(bystander.sandbox("pi", "keep"))/mine") == "bystander")
        #expect(try bystander.status().count == 1)

        #expect(fixture.stop() == 0)
        #expect(bystander.stop() == 0)
        neighbour?.expectKept(log: fixture.log, starts: 2)
    }

    /// A root LV in two runs (lvm-split) on dm: base and the sandbox's snapshot over a linear table of two
    /// lines, pristine/ over its own `-rN-base` device. SIGKILLed with both in use, the next serve sweeps
    /// them all (and the loop devices under them).
    @Test(.enabled(if: Environment.engine == "dm", "a volume in several runs is served by the dm engine only"))
    func sigkillWithASplitVolumeInUseThenServeAgainSweepsItsDevices() throws {
        let fixture = try ServeFixture(images: [("split", "lvm-split", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("split", "a")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        try FileChecks.writeFile("\(sandbox)/note", "a")
        // An open file keeps pristine/'s devices (they go when the view is idle).
        let held = open("\(fixture.mountpoint)/split/pristine/which-partition", O_RDONLY | O_CLOEXEC)
        #expect(held >= 0, "open in pristine/: \(String(cString: strerror(errno)))")
        let dead = try #require(fixture.pid)
        let devices = Residue.dmDevices(of: dead)
        let isView = { (name: String) in name.hasPrefix(InstanceNames(pid: dead).fsName + "-r") && name.hasSuffix("-base") }
        #expect(devices.contains(where: isView) && devices.contains { $0.contains("-i") && $0.hasSuffix("-base") },
                "pristine/'s joined view and the image's base: \(devices)")

        #expect(fixture.stop(with: SIGKILL) == SIGKILL)
        if held >= 0 { close(held) }
        #expect(Residue.dmDevices(of: dead).contains(where: isView), "SIGKILL leaves the view's device")

        try fixture.start()
        #expect(Self.leftovers(of: dead).isEmpty, "still there after the sweep: \(Self.leftovers(of: dead)); sweep: \(fixture.log.filter { $0.contains("swe") })")
        let residue = Residue.find(work: fixture.work, instance: dead).filter { $0 != "mount \(fixture.mountpoint)" }
        #expect(residue.isEmpty, "left behind by the dead instance: \(residue)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.sandbox("split", "")).isEmpty)
        #expect(fixture.stop() == 0)
    }

    /// Defect: right after a SIGKILL the daemon is a zombie until its parent reaps it (init reaps late), and
    /// the sweep took the zombie for alive: it left the dead FUSE mount, and serve failed with "MNT is not a
    /// directory" (ENOTCONN). Here the parent never reaps until the test ends.
    @Test(arguments: [false, true])
    func serveAgainWhileTheKilledDaemonIsStillAZombie(withUnsweepableNeighbour: Bool) throws {
        let neighbour = withUnsweepableNeighbour ? try UnsweepableNeighbour() : nil
        defer { neighbour?.remove() }
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        try fixture.start(reaped: false)
        #expect(mkdir(fixture.sandbox("pi", "a"), 0o755) == 0)
        let dead = try fixture.killLeavingZombie()
        #expect(ServeFixture.processState(dead) == "Z")
        #expect(!Self.leftovers(of: dead).isEmpty)

        try fixture.start()
        #expect(ServeFixture.processState(dead) == "Z", "still a zombie while the sweep ran")
        #expect(Self.leftovers(of: dead).isEmpty, "left by the zombie's instance: \(Self.leftovers(of: dead))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.sandbox("pi", "")).isEmpty)
        #expect(fixture.stop() == 0)
        neighbour?.expectKept(log: fixture.log, starts: 2)
    }

    enum StopWay: String, CaseIterable, Sendable {
        case sigterm, sigint, umount, fusermount
    }

    @Test(arguments: StopWay.allCases)
    func everyWayOfStoppingTearsEverythingDown(way: StopWay) throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        try fixture.start()
        for name in ["x", "y"] {
            #expect(mkdir(fixture.sandbox("pi", name), 0o755) == 0)
            try FileChecks.writeFile("\(fixture.sandbox("pi", name))/note", name)
        }
        let pid = try #require(fixture.pid)
        let status: Int32?
        switch way {
        case .sigterm: status = Reliability.stop(fixture, signal: SIGTERM)
        case .sigint: status = Reliability.stop(fixture, signal: SIGINT)
        case .umount:
            #expect(try run(["umount", fixture.mountpoint]).status == 0)
            status = Reliability.stop(fixture, signal: 0)
        case .fusermount:
            #expect(try run(["fusermount3", "-u", fixture.mountpoint]).status == 0)
            status = Reliability.stop(fixture, signal: 0)
        }
        #expect(status == 0, "serve's exit status after \(way)")
        #expect(Self.leftovers(of: pid).isEmpty, "left after \(way): \(Self.leftovers(of: pid))")
        // fixture.close() checks the machine-wide residue (loops, zram) and the image checksum.
    }

    @Test func aFullCowStoreIsOverflowedContainedAndFreedByRmdir() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        // The filesystem gets more room than the store, so the store is what runs out.
        try fixture.start(["--cow-size", "64M", "--grow", "256M"])
        let full = fixture.sandbox("pi", "full"), other = fixture.sandbox("pi", "other")
        #expect(mkdir(full, 0o755) == 0)
        #expect(mkdir(other, 0o755) == 0)

        let failure = Reliability.writeUntilError("\(full)/big.bin", mebibytes: 100)
        #expect(failure != 0, "a 100 MiB write into a 64 MiB COW store fails somewhere")

        // The watcher logs the overflow when it sees it; status then reports it from the same kernel state.
        #expect(fixture.waitForLog(timeout: 30) { $0.contains("pi/full overflowed its COW store") })
        let rows = try fixture.status()
        #expect(rows.first { $0["sandbox"] as? String == "full" }?["state"] as? String == "overflowed")
        let otherRow = rows.first { $0["sandbox"] as? String == "other" }
        #expect(otherRow?["state"] as? String == "active", "the other sandbox is unaffected")

        try FileChecks.writeFile("\(other)/still-works", "yes")
        #expect(FileChecks.readFile("\(other)/still-works") == "yes")
        #expect(FileChecks.readFile("\(other)/etc/hostname") != nil)

        #expect(rmdir(full) == 0, "rmdir of an overflowed sandbox: \(String(cString: strerror(errno)))")
        #expect(try fixture.status().map { $0["sandbox"] as? String } == ["other"])
        // The name is free again and a new sandbox of it starts with an empty store.
        #expect(mkdir(full, 0o755) == 0)
        let fresh = try fixture.status().first { $0["sandbox"] as? String == "full" }
        #expect(fresh?["state"] as? String == "active")
        #expect(fixture.stop() == 0)
    }

    /// dm only (the VM): the COW store starts at --cow-size and grows online, a step at a time, to --cow-max:
    /// 150 MiB written take it through three steps to the maximum (more data only costs time under emulation).
    @Test(.enabled(if: Environment.engine == "dm", "the COW store grows on the dm engine only"))
    func cowStoreGrowsUpToCowMax() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        try fixture.start(["--cow-size", "64M", "--cow-max", "256M"])
        let sandbox = fixture.sandbox("pi", "grow")
        #expect(mkdir(sandbox, 0o755) == 0)
        let before = try #require(try fixture.status().first)
        #expect(Reliability.bytes(before["cow_max_bytes"]) == 256 << 20)
        #expect(Reliability.bytes(before["cow_total_bytes"]) <= 128 << 20)

        try FileChecks.writeBig("\(sandbox)/big.bin", mebibytes: 150, seed: 7)

        let after = try #require(try fixture.status().first)
        #expect(after["state"] as? String == "active")
        #expect(Reliability.bytes(after["cow_total_bytes"]) > 150 << 20, "the store grew past the data written")
        #expect(Reliability.bytes(after["cow_total_bytes"]) <= 256 << 20)
        #expect(Reliability.bytes(after["cow_used_bytes"]) >= 150 << 20)
        #expect(fixture.waitForLog { $0.contains("grew the COW store of pi/grow") })
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
    }

    /// dm only (the VM): a 1 KiB-block ext4 sandbox runs on a 512-byte-sector loop over its COW store; when
    /// the store grows, the loop must take the new size (LOOP_SET_CAPACITY) or the snapshot overflows at
    /// the first 64 MiB: 100 MiB written cross it and a second step.
    @Test(.enabled(if: Environment.engine == "dm", "the COW loop and growth are the dm engine's"))
    func oneKiBBlockSandboxGrowsThroughItsCowLoop() throws {
        let fixture = try ServeFixture(images: [("small", "ext4-1k", [])])
        defer { fixture.close() }
        try fixture.start(["--cow-size", "64M", "--cow-max", "192M"])
        let sandbox = fixture.sandbox("small", "grow")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        let pid = try #require(fixture.pid)
        let loops = Reliability.cowLoops(of: pid)
        #expect(loops.count == 1, "one COW loop device for the sandbox: \(loops)")
        for loop in loops { #expect(try BlockDevice.logicalBlockSize(of: "/dev/loop\(loop.index)") == 512) }

        let buffersBefore = Reliability.meminfo("Buffers")
        try FileChecks.writeBig("\(sandbox)/big.bin", mebibytes: 100, seed: 11)
        // Block-device page cache (the loop's copies over zram), for the record.
        print("1 KiB ext4 sandbox, 100 MiB written: block-device page cache (Buffers) grew by \((Reliability.meminfo("Buffers") - buffersBefore) >> 20) MiB")

        let after = try #require(try fixture.status().first)
        #expect(after["state"] as? String == "active", "COW log: \(fixture.log.filter { $0.contains("COW") })")
        #expect(Reliability.bytes(after["cow_total_bytes"]) > 100 << 20, "the snapshot sees the grown loop")
        #expect(Reliability.bytes(after["cow_total_bytes"]) <= 192 << 20)
        #expect(fixture.waitForLog { $0.contains("grew the COW store of small/grow") })
        // Read it again from the devices (snapshot, loop, zram), not from the page cache. Only in the VM.
        #expect(Reliability.dropCaches())
        #expect(Reliability.readsBack("\(sandbox)/big.bin", mebibytes: 100, seed: 11))
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
        // fixture.close() checks that the COW loop is gone with the rest.
    }
}

/// Helpers of ReliabilitySuite.
enum Reliability {
    /// Signals serve (0: none, it is already on its way out) and waits for it; SIGKILLs it after 120 s so a
    /// hung teardown fails the test instead of hanging the suite.
    static func stop(_ fixture: ServeFixture, signal: Int32) -> Int32? {
        guard let pid = fixture.pid else { return nil }
        let watchdog = DispatchWorkItem { kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 120, execute: watchdog)
        defer { watchdog.cancel() }
        return fixture.stop(with: signal)
    }

    /// Writes up to `mebibytes` and fsyncs; returns the first errno (write or fsync), 0 if all succeeded.
    static func writeUntilError(_ path: String, mebibytes: Int) -> Int32 {
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        for index in 0..<mebibytes {
            let chunk = FileChecks.pattern(mebibyte: index, seed: 7)
            let written = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 { return errno }
            if written < chunk.count { return ENOSPC }
        }
        return fsync(fd) == 0 ? 0 : errno
    }

    static func bytes(_ value: Any?) -> UInt64 { (value as? NSNumber)?.uint64Value ?? 0 }

    /// The instance's loop devices backed by a device (the dm engine's 512-byte-sector COW loops), not an image.
    static func cowLoops(of pid: Int32) -> [(index: Int, backingFile: String, label: String?)] {
        LoopDevice.attached().filter { $0.backingFile.hasPrefix("/dev/") && $0.label.flatMap(InstanceNames.owner(loopLabel:)) == pid }
    }

    /// A /proc/meminfo field in bytes (0 if absent).
    static func meminfo(_ field: String) -> Int64 {
        let text = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("\(field):") }
        return (line?.split(separator: " ").dropFirst().first.flatMap { Int64($0) } ?? 0) * 1024
    }

    /// Writes back and drops clean page cache machine-wide (the VM's, where this is used).
    static func dropCaches() -> Bool {
        sync()
        let fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return write(fd, "3", 1) == 1
    }

    /// Whether `path` holds what FileChecks.writeBig(path, mebibytes:, seed:) wrote (the same pattern).
    static func readsBack(_ path: String, mebibytes: Int, seed: UInt8) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var back = [UInt8](repeating: 0, count: 1 << 20)
        for index in 0..<mebibytes {
            let count = back.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count == back.count, back == FileChecks.pattern(mebibyte: index, seed: seed) else { return false }
        }
        return back.withUnsafeMutableBytes { read(fd, $0.baseAddress, 1) } == 0
    }
}
