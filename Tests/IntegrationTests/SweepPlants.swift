import CLinux
import Foundation
import Glibc
import LinuxBlock
import Sandbox
import Testing

/// A dead instance planted by a test: a root-owned run directory RUNROOT/PID (mode 0700) with a process
/// record of this PID namespace whose process is gone, as a SIGKILLed serve leaves it.
final class PlantedInstance {
    let names: InstanceNames

    init(zramIDs: [Int] = []) throws {
        names = InstanceNames(pid: try Self.freePid())
        // As serve makes it (a fresh machine has none yet): the sweep ignores a run root of any other mode.
        if mkdir(InstanceNames.defaultRunRoot, 0o700) != 0 { try #require(errno == EEXIST) }
        try #require(mkdir(names.runDirectory, 0o700) == 0, "mkdir \(names.runDirectory): \(String(cString: strerror(errno)))")
        let namespace = try #require(PidNamespaceView.namespace(of: nil))
        // Start time 1: no process that runs now started then, so the record is dead even if the pid is reused.
        try FileChecks.writeFile(names.processRecord, InstanceProcess(pid: names.pid, startTime: 1, pidNamespace: namespace).recordText, mode: 0o600)
        if !zramIDs.isEmpty { try #require(mkdir(names.zramLedger, 0o700) == 0) }
        for id in zramIDs { try FileChecks.writeFile("\(names.zramLedger)/\(id)", "", mode: 0o600) }
    }

    var pid: Int32 { names.pid }
    var exists: Bool { access(names.runDirectory, F_OK) == 0 }

    /// A pid no process and no run directory uses, from the top of the pid range (least likely to be reused).
    static func freePid() throws -> Int32 {
        let max = Int32((try? String(contentsOfFile: "/proc/sys/kernel/pid_max", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 32768
        for pid in stride(from: max - 1, to: max - 2000, by: -1)
        where access("/proc/\(pid)", F_OK) != 0 && access(InstanceNames(pid: pid).runDirectory, F_OK) != 0 {
            return pid
        }
        throw CommandFailed(argv: ["free pid"], status: 1, output: "no free pid below \(max)")
    }

    func remove() {
        _ = try? run(["rm", "-rf", "--one-file-system", names.runDirectory], allowFailure: true)
    }
}

/// Mounts for the sweep tests, each made and removed by the test itself.
enum Plant {
    /// A FUSE mount whose connection is already dead (its /dev/fuse fd closed before INIT was answered), as
    /// a SIGKILLed daemon leaves it: made by root with any fsname, type and user_id.
    static func deadFuseMount(at path: String, fsName: String, type: String, userID: uid_t = 0) throws {
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        try #require(fd >= 0, "open /dev/fuse: \(String(cString: strerror(errno)))")
        defer { close(fd) }
        let options = "fd=\(fd),rootmode=40000,user_id=\(userID),group_id=0"
        try #require(mount(fsName, path, type, UInt(MS_NOSUID | MS_NODEV), options) == 0,
                     "mount \(type) at \(path): \(String(cString: strerror(errno)))")
    }

    /// A FUSE mount made by user `uid` through fusermount3 (setuid root), the way any local user can where
    /// /dev/fuse is open to users: fsname `fsName`, subtype `subtype`. The fd fusermount3 passes back is
    /// never read, so the connection dies with the socket: a dead mount as the user left it.
    static func userFuseMount(at path: String, fsName: String, subtype: String, uid: uid_t) throws {
        try #require(chown(path, uid, uid) == 0)
        var sockets: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sockets) == 0)
        defer { close(sockets[0]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, sockets[1], 3)
        let argv = ["/usr/bin/setpriv", "--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "/usr/bin/fusermount3",
                    "-o", "fsname=\(fsName),subtype=\(subtype)", "--", path]
        let env = ["_FUSE_COMMFD=3", "PATH=/usr/bin:/bin"]
        var cArgv = argv.map { strdup($0) } + [nil]
        var cEnv = env.map { strdup($0) } + [nil]
        defer { (cArgv + cEnv).forEach { free($0) } }
        var child: pid_t = 0
        try #require(posix_spawn(&child, argv[0], &actions, nil, &cArgv, &cEnv) == 0)
        close(sockets[1])
        var status: Int32 = 0
        waitpid(child, &status, 0)
        try #require(status == 0, "fusermount3 as uid \(uid) exited with status \(status)")
    }

    static func tmpfs(at path: String) throws {
        try #require(mount("sweep-test", path, "tmpfs", UInt(MS_NOSUID | MS_NODEV), "size=1m") == 0,
                     "mount tmpfs at \(path): \(String(cString: strerror(errno)))")
    }

    static func mounts(at path: String) -> [MountEntry] { Mount.mountPoints().filter { $0.mountPoint == path } }

    /// Detaches every mount at `path`, top first.
    static func unmountAll(at path: String) {
        for _ in mounts(at: path) { umount2(path, Int32(MNT_DETACH)) }
    }
}

/// A zram device the test formats and mounts itself, recorded in a planted dead instance's ledger: the
/// sweep cannot reset it (the test's own mount holds it), so that instance stays unsweepable.
final class HeldZram {
    let id: Int
    let mountPoint: String
    let zram = Zram()

    init(mountPoint: String) throws {
        self.mountPoint = mountPoint
        id = try zram.add()
        do {
            try zram.setDisksize(id, bytes: 64 << 20)
            try run(["mkfs.ext4", "-q", "-F", zram.devicePath(id)])
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            try Mount.mount(source: zram.devicePath(id), target: mountPoint, type: "ext4")
            try FileChecks.writeFile("\(mountPoint)/held", "held by the test")
        } catch {
            release()
            throw error
        }
    }

    var stillHeld: Bool { FileChecks.readFile("\(mountPoint)/held") == "held by the test" }

    func release() {
        Plant.unmountAll(at: mountPoint)
        try? zram.reset(id)
        try? zram.remove(id)
    }
}

/// Exchanges each `parent` with a symlink to `decoy` (renameat2 RENAME_EXCHANGE) in a tight loop on a thread
/// of its own, as a local user owning those directories could while serve starts.
// @unchecked: `stopping` is behind `lock`, `finished` and `swaps` behind `done`; `pairs` never changes.
final class SymlinkSwapper: @unchecked Sendable {
    let pairs: [(parent: String, link: String)]
    private let lock = NSLock()
    private var stopping = false
    private let done = NSCondition()
    private var finished = false
    private(set) var swaps = 0

    init(pairs: [(parent: String, link: String)]) {
        self.pairs = pairs
    }

    func start() {
        Thread { [self] in
            var count = 0
            while !lock.withLock({ stopping }) {
                for pair in pairs where clinux_renameat2(AT_FDCWD, pair.parent, AT_FDCWD, pair.link, clinux_RENAME_EXCHANGE) == 0 {
                    count += 1
                }
            }
            done.withLock {
                swaps = count
                finished = true
                done.broadcast()
            }
        }.start()
    }

    /// Stops the loop and puts every directory back under its own name.
    func stop() {
        lock.withLock { stopping = true }
        done.withLock { while !finished { done.wait() } }
        for pair in pairs {
            var info = Glibc.stat()
            if lstat(pair.parent, &info) == 0, info.st_mode & S_IFMT == S_IFLNK {
                _ = clinux_renameat2(AT_FDCWD, pair.parent, AT_FDCWD, pair.link, clinux_RENAME_EXCHANGE)
            }
        }
    }
}

/// "sweeping what dead serve instances left: pids 1, 2" -> [1, 2], over every such line of a log.
func sweptPids(_ log: [String]) -> Set<Int32> {
    let marker = "sweeping what dead serve instances left: pids "
    return Set(log.flatMap { line -> [Int32] in
        guard let range = line.range(of: marker) else { return [] }
        return line[range.upperBound...].split(whereSeparator: { $0 == "," || $0 == " " }).compactMap { Int32($0) }
    })
}

/// What a machine with an old leak looks like to the next serve: a dead instance that cannot be swept (its
/// ledger records a zram device the test's own mount holds) and a zram device in use that no instance
/// records. Neither may hold back the sweep of other instances or turn a test red.
final class UnsweepableNeighbour {
    let planted: PlantedInstance
    let held: HeldZram
    let orphan: Int
    let directory = NSTemporaryDirectory() + "imgsandbox-held-\(UUID().uuidString.prefix(8))"

    init() throws {
        held = try HeldZram(mountPoint: directory + "/mnt")
        do {
            orphan = try held.zram.add()
            try held.zram.setDisksize(orphan, bytes: 16 << 20)
            planted = try PlantedInstance(zramIDs: [held.id])
        } catch {
            held.release()
            throw error
        }
    }

    /// Kept, untouched, and reported once per serve start with what holds it and how to free it.
    func expectKept(log: [String], starts: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(planted.exists, "the unsweepable instance keeps its run directory", sourceLocation: sourceLocation)
        #expect(held.stillHeld, "its zram device, held by our mount, was not reset", sourceLocation: sourceLocation)
        #expect(held.zram.exists(orphan) && (try? held.zram.disksize(orphan)) == 16 << 20, sourceLocation: sourceLocation)
        let reports = log.filter { $0.contains("dead instance \(planted.pid) cannot be swept") }
        #expect(reports.count == starts, "one report per start: \(reports)", sourceLocation: sourceLocation)
        #expect(reports.allSatisfy { $0.contains("mounted at \(held.mountPoint)") && $0.contains("umount -l \(held.mountPoint)") },
                "\(reports)", sourceLocation: sourceLocation)
        // doctor and status show it with the command that frees it.
        for command in ["doctor", "status"] {
            let output = (try? run([Paths.binary, command], allowFailure: true).output) ?? ""
            #expect(output.contains("dead instance \(planted.pid) not swept: zram\(held.id)")
                    && output.contains("umount -l \(held.mountPoint)"), "\(command): \(output)", sourceLocation: sourceLocation)
        }
    }

    func remove() {
        held.release()
        try? held.zram.reset(orphan)
        try? held.zram.remove(orphan)
        planted.remove()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
