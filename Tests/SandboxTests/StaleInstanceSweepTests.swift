import Foundation
import Glibc
import LinuxBlock
import Testing
@testable import Sandbox

/// The sweep's pure parts: which instances are dead, and what is released in which order.
@Suite struct StaleInstanceSweepTests {
    static let runRoot = "/run/imgsandbox"

    static func mount(_ point: String, _ source: String, _ type: String, options: String = "rw", id: UInt64) -> MountEntry {
        MountEntry(mountPoint: point, source: source, type: type, options: options, deviceNumber: DeviceNumber(major: 0, minor: 1), id: id)
    }
    static let root = "rw,user_id=0,group_id=0"

    /// Dead instance 100 (overlay: FUSE, lower, upper, sandbox mount, two zram, loop), dead instance 200 (dm:
    /// only devices), live instance 300, dead instance 400 whose run directory is not root's 0700 one,
    /// objects named after pids without a run directory (2000, 500), and objects that are not imgsandbox's:
    /// FUSE mounts named like instance 100's but not of our type or not mounted by root.
    static let survey = StaleInstanceSweep.Survey(
        runRoot: runRoot,
        instances: [
            .init(pid: 100, record: InstanceProcess(pid: 100, startTime: 5, pidNamespace: 1), zramIDs: [1, 4]),
            .init(pid: 200, record: InstanceProcess(pid: 200, startTime: 6, pidNamespace: 1), zramIDs: []),
            .init(pid: 300, record: InstanceProcess(pid: 300, startTime: 7, pidNamespace: 1), zramIDs: [2]),
            .init(pid: 400, record: InstanceProcess(pid: 400, startTime: 8, pidNamespace: 1), zramIDs: [5], ownedByRoot: false),
        ],
        mounts: [
            mount("/", "/dev/vda", "ext4", id: 1),
            mount("/srv/a", "imgsandbox-100", "fuse.imgsandbox", options: root, id: 2),
            mount("/run/imgsandbox/100/lower-1", "/dev/loop0", "ext4", id: 3),
            mount("/run/imgsandbox/100/upper-2", "/dev/zram1", "ext4", id: 4),
            mount("/run/imgsandbox/100/mnt/pi/x", "imgsandbox", "overlay", id: 5),
            mount("/srv/b", "imgsandbox-300", "fuse.imgsandbox", options: root, id: 6),
            mount("/run/imgsandbox/300/upper-2", "/dev/zram2", "ext4", id: 7),
            mount("/srv/c", "imgsandbox-100x", "fuse.other", id: 8),
            mount("/srv/d", "sshfs", "fuse.sshfs", id: 9),
            mount("/home/u/e", "imgsandbox-100", "fuse.imgsandbox", options: "rw,user_id=1500,group_id=1500", id: 10),
            mount("/home/u/f", "imgsandbox-100", "fuse.other", options: root, id: 11),
            mount("/home/u/g", "imgsandbox-100", "fuse", options: root, id: 12),
            mount("/home/u/h", "imgsandbox-100", "fuse.imgsandbox", options: "rw,user_id=10,group_id=0", id: 13),
            mount("/srv/i", "imgsandbox-500", "fuse.imgsandbox", options: root, id: 14),
            mount("/run/imgsandbox/400/upper-1", "/dev/zram5", "ext4", id: 15),
        ],
        dmNames: ["imgsandbox-200-i1-base", "imgsandbox-200-s2", "imgsandbox-200-s2-cow", "imgsandbox-300-s1",
                  "vg0-root", "imgsandbox-2000-s1", "imgsandbox-400-s1"],
        loops: [(0, "imgsandbox-100:pi"), (1, "imgsandbox-300:pi"), (2, "/var/lib/other.img"), (3, nil), (4, "imgsandbox-500:pi")])

    /// Alive: 300 with its recorded start time; 2000 and 500 have no run directory (never asked).
    static func liveness(_ pid: Int32, _ record: InstanceProcess?) -> InstanceProcess.Liveness {
        switch pid {
        case 300: record?.startTime == 7 ? .alive : .dead
        case 100, 200, 400: .dead
        default: .alive
        }
    }

    @Test func deadInstancesAreThoseWithARootRunDirectoryWhoseRecordSaysDead() {
        #expect(StaleInstanceSweep.deadInstances(Self.survey, liveness: Self.liveness) == [100, 200])
        #expect(StaleInstanceSweep.deadInstances(Self.survey) { _, _ in .unknown }.isEmpty)
    }

    @Test func aReusedPidWithAnotherStartTimeIsDead() {
        var survey = Self.survey
        survey.instances[2].record = InstanceProcess(pid: 300, startTime: 8, pidNamespace: 1)
        #expect(StaleInstanceSweep.deadInstances(survey, liveness: Self.liveness) == [100, 200, 300])
    }

    @Test func planReleasesUsersBeforeWhatTheyUseAndOnlyDeadInstancesObjects() {
        let plan = StaleInstanceSweep.plan(Self.survey, dead: [100, 200])
        typealias Target = StaleInstanceSweep.MountTarget
        #expect(plan == [
            .init(100, .detachFuse(Target(id: 2, path: "/srv/a"))),
            .init(100, .unmount(Target(id: 5, path: "/run/imgsandbox/100/mnt/pi/x"))),
            .init(100, .unmount(Target(id: 4, path: "/run/imgsandbox/100/upper-2"))),
            .init(100, .unmount(Target(id: 3, path: "/run/imgsandbox/100/lower-1"))),
            .init(200, .removeDM("imgsandbox-200-s2")),
            .init(200, .removeDM("imgsandbox-200-s2-cow")),
            .init(200, .removeDM("imgsandbox-200-i1-base")),
            .init(100, .freeZram(1, ledger: "/run/imgsandbox/100/zram")),
            .init(100, .freeZram(4, ledger: "/run/imgsandbox/100/zram")),
            .init(100, .detachLoop(0, label: "imgsandbox-100:pi")),
            .init(100, .removeRunDirectory("/run/imgsandbox/100")),
            .init(200, .removeRunDirectory("/run/imgsandbox/200")),
        ])
    }

    @Test func aLeftoverSaysWhatHoldsItAndHowToFreeIt() {
        let held = StaleInstanceSweep.Leftover(pid: 9, runDirectory: "/run/imgsandbox/9", objects: ["zram3", "zram4"],
                                               holders: ["zram3: mounted at /x", "zram4: superblock /sys/fs/ext4/zram4 alive with no mount, fd or holder"],
                                               freeingCommands: ["umount -l /x"], kernelHeld: ["zram4"])
        #expect(held.holdersDescription == "held: zram3: mounted at /x; zram4: superblock /sys/fs/ext4/zram4 alive with no mount, fd or holder")
        #expect(held.remedy == "free with: umount -l /x; the kernel holds zram4 with no mount left: only a reboot frees it; the next serve start sweeps the rest")
        let free = StaleInstanceSweep.Leftover(pid: 9, runDirectory: "/run/imgsandbox/9", objects: [], holders: [],
                                               freeingCommands: [], kernelHeld: [])
        #expect(free.holdersDescription == "nothing found holding its devices")
        #expect(free.remedy == "the next serve start sweeps the rest")
    }

    @Test func nothingDeadMeansNothingToDo() {
        #expect(StaleInstanceSweep.plan(Self.survey, dead: []).isEmpty)
    }

    /// PID namespaces: a record of this namespace is judged by its start time; one of another namespace is
    /// alive while a process of that namespace has the pid, dead when none has it and every process is
    /// visible, and never judged dead from a child namespace that cannot see it.
    @Test func livenessAcrossPidNamespaces() throws {
        let me = try #require(InstanceProcess.current())
        let own = try #require(me.pidNamespace)
        let top = PidNamespaceView(own: own, seesEveryProcess: true)
        let nested = PidNamespaceView(own: own, seesEveryProcess: false)
        #expect(InstanceProcess.liveness(pid: me.pid, record: me, view: top) == .alive)
        let restarted = InstanceProcess(pid: me.pid, startTime: me.startTime + 1, pidNamespace: own)
        #expect(InstanceProcess.liveness(pid: me.pid, record: restarted, view: top) == .dead)
        #expect(InstanceProcess.liveness(pid: me.pid, record: restarted, view: nested) == .dead)
        // Seen from "another" namespace: this process is the live one with that pid there.
        let elsewhere = PidNamespaceView(own: own + 1, seesEveryProcess: false)
        #expect(InstanceProcess.liveness(pid: me.pid, record: InstanceProcess(pid: me.pid, startTime: 1, pidNamespace: own),
                                         view: elsewhere) == .alive)
        // A namespace no process is in: gone for a view of every process, unknown for a nested one.
        let vanished = InstanceProcess(pid: me.pid, startTime: me.startTime, pidNamespace: 1)
        #expect(InstanceProcess.liveness(pid: me.pid, record: vanished, view: top) == .dead)
        #expect(InstanceProcess.liveness(pid: me.pid, record: vanished, view: nested) == .unknown)
        // Records from before the namespace was recorded were written in the initial namespace.
        let legacy = InstanceProcess(pid: me.pid, startTime: me.startTime + 1)
        #expect(InstanceProcess.liveness(pid: me.pid, record: legacy, view: top) == .dead)
        #expect(InstanceProcess.liveness(pid: me.pid, record: legacy, view: nested) == .unknown)
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
        for dm in [names.baseDevice(image: 7), names.snapshotDevice(sandbox: 8), names.cowDevice(sandbox: 8),
                   names.readOnlyDevice(view: 9)] {
            #expect(InstanceNames.owner(dmName: dm) == 4321, "\(dm)")
        }
        #expect(InstanceNames.DeviceRole(dmName: names.baseDevice(image: 7)) == .base)
        #expect(InstanceNames.DeviceRole(dmName: names.readOnlyDevice(view: 9)) == .base)
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
        let record = InstanceProcess(pid: 42, startTime: 123456, pidNamespace: 4026531836)
        #expect(record.recordText == "42 123456 4026531836\n")
        #expect(InstanceProcess(recordText: record.recordText) == record)
        #expect(InstanceProcess(recordText: "42 123456\n") == InstanceProcess(pid: 42, startTime: 123456))
        #expect(InstanceProcess(recordText: "42 123456 x") == nil)
        #expect(InstanceProcess(recordText: "-1 123456 7") == nil)
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
        let view = PidNamespaceView.current()
        #expect(me.isRunning)
        #expect(InstanceProcess.liveness(pid: me.pid, record: me, view: view) == .alive)
        #expect(InstanceProcess.liveness(pid: me.pid, record: InstanceProcess(pid: me.pid, startTime: me.startTime + 1,
                                                                              pidNamespace: me.pidNamespace), view: view) == .dead)
        // A child that has exited and been reaped leaves its pid free.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        #expect(InstanceProcess.liveness(pid: child.processIdentifier, record: nil, view: view) == .dead)
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
        #expect(InstanceProcess.liveness(pid: child, record: nil, view: PidNamespaceView.current()) == .dead)
        let own = try #require(PidNamespaceView.namespace(of: nil))
        #expect(PidNamespaceView(own: own + 1, seesEveryProcess: true).runningProcess(pid: child, in: own) == nil,
                "a zombie is no live process of its namespace")
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
