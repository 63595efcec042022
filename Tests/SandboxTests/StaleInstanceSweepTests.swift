import Foundation
import Glibc
import LinuxBlock
import Testing
@testable import Sandbox

/// The sweep's pure parts: which instances are dead, and what is released in which order.
@Suite struct StaleInstanceSweepTests {
    static let runRoot = "/run/imgsandbox"

    static func mount(_ point: String, _ source: String, _ type: String) -> MountEntry {
        MountEntry(mountPoint: point, source: source, type: type, options: "rw", deviceNumber: DeviceNumber(major: 0, minor: 1))
    }

    /// Dead instance 100 (overlay: FUSE, lower, upper, sandbox mount, two zram, loop), dead instance 200 (dm:
    /// only devices, no run directory), live instance 300, and objects that are not imgsandbox's.
    static let survey = StaleInstanceSweep.Survey(
        runRoot: runRoot,
        instances: [
            .init(pid: 100, record: InstanceProcess(pid: 100, startTime: 5), zramIDs: [1, 4]),
            .init(pid: 300, record: InstanceProcess(pid: 300, startTime: 7), zramIDs: [2]),
        ],
        mounts: [
            mount("/", "/dev/vda", "ext4"),
            mount("/srv/a", "imgsandbox-100", "fuse.imgsandbox"),
            mount("/run/imgsandbox/100/lower-1", "/dev/loop0", "ext4"),
            mount("/run/imgsandbox/100/upper-2", "/dev/zram1", "ext4"),
            mount("/run/imgsandbox/100/mnt/pi/x", "imgsandbox", "overlay"),
            mount("/srv/b", "imgsandbox-300", "fuse.imgsandbox"),
            mount("/run/imgsandbox/300/upper-2", "/dev/zram2", "ext4"),
            mount("/srv/c", "imgsandbox-100x", "fuse.other"),
            mount("/srv/d", "sshfs", "fuse.sshfs"),
        ],
        dmNames: ["imgsandbox-200-i1-base", "imgsandbox-200-s2", "imgsandbox-200-s2-cow", "imgsandbox-300-s1",
                  "vg0-root", "imgsandbox-2000-s1"],
        loops: [(0, "imgsandbox-100:pi"), (1, "imgsandbox-300:pi"), (2, "/var/lib/other.img"), (3, nil)])

    /// Alive: 300 with its recorded start time, and 2000 (pid known, no record).
    static func isAlive(_ pid: Int32, _ record: InstanceProcess?) -> Bool {
        switch pid {
        case 300: record?.startTime == 7
        case 2000: record == nil
        default: false
        }
    }

    @Test func deadInstancesComeFromEveryNameAndSkipTheLiveAndOurselves() {
        #expect(StaleInstanceSweep.deadInstances(Self.survey, ownPID: 999, isAlive: Self.isAlive) == [100, 200])
        #expect(StaleInstanceSweep.deadInstances(Self.survey, ownPID: 100, isAlive: Self.isAlive) == [200])
    }

    @Test func aReusedPidWithAnotherStartTimeIsDead() {
        var survey = Self.survey
        survey.instances[1].record = InstanceProcess(pid: 300, startTime: 8)
        #expect(StaleInstanceSweep.deadInstances(survey, ownPID: 999, isAlive: Self.isAlive) == [100, 200, 300])
    }

    @Test func planReleasesUsersBeforeWhatTheyUseAndOnlyDeadInstancesObjects() {
        let plan = StaleInstanceSweep.plan(Self.survey, dead: [100, 200])
        #expect(plan == [
            .detachFuse("/srv/a"),
            .unmount("/run/imgsandbox/100/mnt/pi/x"),
            .unmount("/run/imgsandbox/100/upper-2"),
            .unmount("/run/imgsandbox/100/lower-1"),
            .removeDM("imgsandbox-200-s2"),
            .removeDM("imgsandbox-200-s2-cow"),
            .removeDM("imgsandbox-200-i1-base"),
            .freeZram(1, ledger: "/run/imgsandbox/100/zram"),
            .freeZram(4, ledger: "/run/imgsandbox/100/zram"),
            .detachLoop(0, label: "imgsandbox-100:pi"),
            .removeRunDirectory("/run/imgsandbox/100"),
        ])
    }

    @Test func nothingDeadMeansNothingToDo() {
        #expect(StaleInstanceSweep.plan(Self.survey, dead: []).isEmpty)
    }

    @Test(arguments: [
        ("imgsandbox-123-s4", "-", Int32(123)), ("imgsandbox-123", nil, 123), ("imgsandbox-123:pi", ":", 123),
        ("imgsandbox--s4", "-", nil), ("imgsandbox-12a-s4", "-", nil), ("imgsandbox-123", "-", nil),
        ("other-123-s4", "-", nil), ("imgsandbox-0-s1", "-", nil), ("imgsandbox-99999999999-s1", "-", nil),
        ("imgsandbox-+12-s1", "-", nil),
    ] as [(String, Character?, Int32?)])
    func pidsInNames(text: String, terminator: Character?, pid: Int32?) {
        #expect(InstanceNames.pid(in: text, terminator: terminator) == pid)
    }

    /// Every name the engines build parses back to its instance: the sweep cannot drift from the engines.
    @Test func everyBuiltNameParsesBackToItsInstance() {
        let names = InstanceNames(pid: 4321, runRoot: Self.runRoot)
        #expect(InstanceNames.owner(fsName: names.fsName) == 4321)
        for dm in [names.baseDevice(image: 7), names.snapshotDevice(sandbox: 8), names.cowDevice(sandbox: 8)] {
            #expect(InstanceNames.owner(dmName: dm) == 4321, "\(dm)")
        }
        #expect(InstanceNames.DeviceRole(dmName: names.baseDevice(image: 7)) == .base)
        #expect(InstanceNames.DeviceRole(dmName: names.cowDevice(sandbox: 8)) == .cowStore)
        #expect(InstanceNames.DeviceRole(dmName: names.snapshotDevice(sandbox: 8)) == .snapshot)
        #expect(InstanceNames.owner(loopLabel: names.loopLabel(image: "pi")) == 4321)
        #expect(InstanceNames.owner(loopLabel: names.cowLoopLabel(sandbox: 8, image: "pi", name: "x")) == 4321)
        #expect(InstanceNames.owner(runEntry: String(names.pid)) == 4321)
        #expect(InstanceNames.owner(runEntry: "04321") == nil)
        for path in [names.hiddenMount(image: "pi", sandbox: "x"), names.lowerMount(image: 7), names.upperMount(sandbox: 8),
                     names.zramLedger, names.processRecord] {
            #expect(names.holds(path: path), "\(path)")
        }
        #expect(!InstanceNames(pid: 43210, runRoot: Self.runRoot).holds(path: names.lowerMount(image: 7)))
    }

    /// Defect: `.prefix(127)` counted characters, so a long non-ASCII image name made a UUID over the kernel's
    /// 128 bytes (ENAMETOOLONG on every mkdir).
    @Test func dmUUIDsAreCutToTheKernelsLimitInBytesOnACharacterBoundary() {
        let image = String(repeating: "bild-ä€😀", count: 20)
        let uuid = InstanceNames.dmUUID("imgsandbox-123-s4", image, "sandbox")
        #expect(uuid.utf8.count <= InstanceNames.dmUUIDLimit)
        #expect(uuid.utf8.count > InstanceNames.dmUUIDLimit - 4, "only the last partial character is dropped")
        #expect(uuid.hasPrefix("imgsandbox-123-s4-bild-ä€😀"))
        #expect(String(validating: Array(uuid.utf8), as: UTF8.self) == uuid)
        #expect(InstanceNames.dmUUID("a", "b") == "a-b")
        #expect(InstanceNames.utf8Prefix("ä€", maxBytes: 4) == "ä")
    }

    @Test func processRecordRoundTripsAndStartTimeParses() {
        let record = InstanceProcess(pid: 42, startTime: 123456)
        #expect(InstanceProcess(recordText: record.recordText) == record)
        #expect(InstanceProcess(recordText: "42") == nil)
        #expect(InstanceProcess(recordText: "x 1") == nil)
        // comm with spaces and a ')' inside: fields count from the last ')'.
        let stat = "77 (a) b (c) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200"
        #expect(InstanceProcess.parseStat(stat)?.startTime == 98765)
        #expect(InstanceProcess.parseStat(stat)?.state == "S")
        #expect(InstanceProcess.parseStat("77 (a) S 1") == nil)
    }

    @Test func thisProcessIsRunningAndADeadPidIsNot() throws {
        let me = try #require(InstanceProcess.current())
        #expect(me.isRunning)
        #expect(InstanceProcess.isAlive(pid: me.pid, record: me))
        #expect(!InstanceProcess.isAlive(pid: me.pid, record: InstanceProcess(pid: me.pid, startTime: me.startTime + 1)))
        // A child that has exited and been reaped leaves its pid free.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        #expect(!InstanceProcess.isAlive(pid: child.processIdentifier, record: nil))
    }

    /// Defect: a SIGKILLed daemon stays a zombie until its parent reaps it (init reaps late), and the sweep
    /// took the zombie for alive: it kept the dead FUSE mount, and serve then failed on the mountpoint.
    @Test func aZombieIsDead() throws {
        var child: pid_t = 0
        var argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { argv.forEach { free($0) } }
        try #require(posix_spawn(&child, "/bin/true", nil, nil, &argv, nil) == 0)
        // Not reaped: once it has exited it is a zombie. waitid(WNOWAIT) waits for that without reaping.
        var info = siginfo_t()
        try #require(waitid(P_PID, id_t(child), &info, WEXITED | WNOWAIT) == 0)
        defer { waitpid(child, nil, 0) }
        let stat = try #require(try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8))
        #expect(InstanceProcess.parseStat(stat)?.state == "Z")
        #expect(InstanceProcess.startTime(of: child) == nil)
        #expect(!InstanceProcess.isAlive(pid: child, record: nil))
    }

    @Test func removeTreeStopsAtAnotherFilesystemAndDoesNotFollowSymlinks() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("sweep-\(UUID().uuidString)").path
        let outside = root + "-outside"
        try FileManager.default.createDirectory(atPath: root + "/a/b", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: outside) }
        try "keep".write(toFile: outside + "/keep", atomically: true, encoding: .utf8)
        try "x".write(toFile: root + "/a/b/file", atomically: true, encoding: .utf8)
        #expect(symlink(outside, root + "/a/link") == 0)
        try StaleInstanceSweep.removeTree(root)
        #expect(access(root, F_OK) != 0)
        #expect(FileManager.default.fileExists(atPath: outside + "/keep"), "the symlink's target is untouched")
        #expect(throws: SystemError.self) { try StaleInstanceSweep.removeTree("/proc/self", device: 12345) }
    }
}
