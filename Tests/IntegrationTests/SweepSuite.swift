import Foundation
import Glibc
import LinuxBlock
import Sandbox
import Testing

/// The start-up sweep acts only on what imgsandbox made (issue 22): never through a path a user swaps
/// under it, never on a FUSE mount someone else named like ours, never on a live instance of another PID
/// namespace.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct SweepSuite {
    static let childPidNamespace = ["/usr/bin/unshare", "--pid", "--fork", "--mount-proc"]

    /// Attack from the issue: a dead instance's FUSE mounts sit under directories a user owns; while serve
    /// starts, the user swaps each parent with a symlink to a directory holding an unrelated tmpfs. Eight
    /// such mounts, so that code which re-walks the path loses the race at least once (each try about 1/2).
    @Test func aParentSwappedForASymlinkNeverRedirectsTheSweep() throws {
        let planted = try PlantedInstance()
        defer { planted.remove() }
        // On a tmpfs of its own: RENAME_EXCHANGE works there whatever the test folder is (9p in the VM).
        let race = NSTemporaryDirectory() + "imgsandbox-race-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: race, withIntermediateDirectories: true)
        let count = 8
        let parents = (0..<count).map { "\(race)/user\($0)" }, decoys = (0..<count).map { "\(race)/decoy\($0)" }
        let links = (0..<count).map { "\(race)/link\($0)" }
        var swapper: SymlinkSwapper?
        defer {
            swapper?.stop()
            for index in 0..<count {
                Plant.unmountAll(at: "\(parents[index])/mnt")
                Plant.unmountAll(at: "\(decoys[index])/mnt")
            }
            Plant.unmountAll(at: race)
            rmdir(race)
        }
        try Plant.tmpfs(at: race)
        for index in 0..<count {
            try FileManager.default.createDirectory(atPath: "\(parents[index])/mnt", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: "\(decoys[index])/mnt", withIntermediateDirectories: true)
            try #require(symlink(decoys[index], links[index]) == 0)
            try Plant.tmpfs(at: "\(decoys[index])/mnt")
            try Plant.deadFuseMount(at: "\(parents[index])/mnt", fsName: planted.names.fsName, type: InstanceNames.fuseType)
        }
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        swapper = SymlinkSwapper(pairs: Array(zip(parents, links)))
        swapper?.start()
        try fixture.start()
        swapper?.stop()
        #expect((swapper?.swaps ?? 0) > 0)
        swapper = nil
        #expect(sweptPids(fixture.log).contains(planted.pid), "the planted instance was judged dead")
        for decoy in decoys {
            #expect(Plant.mounts(at: "\(decoy)/mnt").map(\.type) == ["tmpfs"], "the tmpfs at \(decoy)/mnt was unmounted")
        }
        // What the sweep could not reach safely (a symlink on the way) stays, and keeps the instance's record.
        let left = parents.filter { !Plant.mounts(at: "\($0)/mnt").isEmpty }
        #expect(left.isEmpty != planted.exists, "left \(left.count) mounts; run directory kept: \(planted.exists)")
        #expect(fixture.stop() == 0)
    }

    /// FUSE mounts with our fsname that imgsandbox did not make: by a user through fusermount3, by root for
    /// another user id, of another type, or of an instance whose run directory is not root's. Only the one
    /// that is ours in every respect is swept.
    @Test func fuseMountsNamedLikeOursThatAreNotOursAreLeftAlone() throws {
        let planted = try PlantedInstance()
        defer { planted.remove() }
        let notRoots = try PlantedInstance()
        defer { notRoots.remove() }
        try #require(chown(notRoots.names.runDirectory, 1500, 1500) == 0)
        let work = NSTemporaryDirectory() + "imgsandbox-named-\(UUID().uuidString.prefix(8))"
        let points = ["ours", "user", "otherUserID", "otherType", "plainFuse", "notRootsRunDirectory"].map { "\(work)/\($0)" }
        defer {
            for point in points { Plant.unmountAll(at: point) }
            _ = try? run(["rm", "-rf", "--one-file-system", work], allowFailure: true)
        }
        for point in points { try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true) }
        try #require(chmod(work, 0o755) == 0)
        let fsName = planted.names.fsName
        try Plant.deadFuseMount(at: points[0], fsName: fsName, type: InstanceNames.fuseType)
        try Plant.userFuseMount(at: points[1], fsName: fsName, subtype: InstanceNames.fuseSubtype, uid: 65534)
        try Plant.deadFuseMount(at: points[2], fsName: fsName, type: InstanceNames.fuseType, userID: 1500)
        try Plant.deadFuseMount(at: points[3], fsName: fsName, type: "fuse.other")
        try Plant.deadFuseMount(at: points[4], fsName: fsName, type: "fuse")
        try Plant.deadFuseMount(at: points[5], fsName: notRoots.names.fsName, type: InstanceNames.fuseType)
        let userMount = try #require(Plant.mounts(at: points[1]).first)
        #expect(userMount.type == InstanceNames.fuseType && userMount.source == fsName && userMount.hasOption("user_id=65534"))

        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        try fixture.start()
        #expect(Plant.mounts(at: points[0]).isEmpty, "the dead instance's own FUSE mount is swept")
        #expect(!planted.exists, "and then its run directory")
        for point in points.dropFirst() {
            #expect(Plant.mounts(at: point).count == 1, "\(point) was unmounted")
        }
        #expect(notRoots.exists)
        #expect(!sweptPids(fixture.log).contains(notRoots.pid))
        #expect(fixture.stop() == 0)
    }

    /// A live serve in a child PID namespace is pid 1 there: the host's serve must not take it for a dead
    /// instance (the host's pid 1 is init, started at another time).
    @Test func aLiveServeInAChildPidNamespaceIsNotSweptFromTheHost() throws {
        let inner = try ServeFixture(images: [("pi", "rpi", [])])
        defer { inner.close() }
        try inner.start(wrapper: Self.childPidNamespace)
        let innerPid = try #require(inner.pid)
        let innerLocal = try #require(Self.innermostPid(innerPid))
        let innerNames = InstanceNames(pid: innerLocal)
        let innerRoot = "/proc/\(innerPid)/root"
        #expect(mkdir(innerRoot + inner.sandbox("pi", "keep"), 0o755) == 0)
        try FileChecks.writeFile(innerRoot + inner.sandbox("pi", "keep") + "/mine", "inner")
        let innerLoops = LoopDevice.attached().filter { $0.label.flatMap(InstanceNames.owner(loopLabel:)) == innerLocal }
        #expect(!innerLoops.isEmpty)

        let host = try ServeFixture(images: [("pi", "rpi", [])])
        defer { host.close() }
        try host.start()
        #expect(!sweptPids(host.log).contains(innerLocal), "the host swept the live instance: \(host.log.filter { $0.contains("swe") })")
        #expect(access(innerNames.processRecord, F_OK) == 0)
        #expect(FileChecks.readFile(innerRoot + inner.sandbox("pi", "keep") + "/mine") == "inner")
        #expect(mkdir(innerRoot + inner.sandbox("pi", "more"), 0o755) == 0, "the inner instance still works")
        #expect(LoopDevice.attached().filter { $0.label.flatMap(InstanceNames.owner(loopLabel:)) == innerLocal }.count >= innerLoops.count)
        #expect(host.stop() == 0)
        #expect(inner.stop() == 0)
    }

    /// The other way round: a serve in a child PID namespace cannot see the host's processes, so it must
    /// leave the host's live instance alone (it used to sweep its mounts and run directory).
    @Test func aServeInAChildPidNamespaceLeavesTheHostsLiveInstanceAlone() throws {
        let host = try ServeFixture(images: [("pi", "rpi", [])])
        defer { host.close() }
        try host.start()
        let hostPid = try #require(host.pid)
        #expect(mkdir(host.sandbox("pi", "keep"), 0o755) == 0)
        try FileChecks.writeFile(host.sandbox("pi", "keep") + "/mine", "host")

        let inner = try ServeFixture(images: [("pi", "rpi", [])])
        defer { inner.close() }
        try inner.start(wrapper: Self.childPidNamespace)
        #expect(!sweptPids(inner.log).contains(hostPid), "the inner serve swept the host's live instance: \(inner.log.filter { $0.contains("swe") })")
        #expect(inner.log.contains { $0.contains("left alone") && $0.contains("\(hostPid)") })
        let hostNames = InstanceNames(pid: hostPid)
        #expect(access(hostNames.processRecord, F_OK) == 0 && access(hostNames.controlSocket, F_OK) == 0)
        // Stopped first: its mount namespace holds copies of the host's mounts made before it started.
        #expect(inner.stop() == 0)
        #expect(FileChecks.readFile(host.sandbox("pi", "keep") + "/mine") == "host")
        #expect(try host.status().count == 1)
        #expect(rmdir(host.sandbox("pi", "keep")) == 0)
        #expect(host.stop() == 0)
    }

    /// The last NSpid entry of /proc/PID/status: the pid in the process's own namespace.
    static func innermostPid(_ pid: Int32) -> Int32? {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("NSpid:") }
        return line?.split(whereSeparator: { $0 == "\t" || $0 == " " }).last.flatMap { Int32($0) }
    }
}
