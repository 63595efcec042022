import Foundation
import Glibc
import TestSupport
import Testing

/// CPU hogs (`yes > /dev/null`) started by a test and stopped by it (in defer): RELEASEs then reach the
/// daemon late, which is what rmdir has to cope with.
// @unchecked: `processes` is filled in init and read only by stop(), on the test's thread.
final class CPULoad: @unchecked Sendable {
    private var processes: [Process] = []

    init(_ count: Int) throws {
        for _ in 0..<count {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/yes")
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            processes.append(process)
        }
    }

    func stop() {
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        processes = []
    }
}

/// rmdir right after the user let go of every file in the sandbox, whichever way (close, a finished
/// `cat`, munmap, the last of dup'd fds, an exec'd program's exit, closedir): the kernel sends RELEASE
/// after that returns, so the daemon must wait for it and never answer EBUSY. A process's cwd is no open
/// file. A file really open gets EBUSY and one log line naming it.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct ReleaseSuite {
    enum Way: String, CaseIterable {
        case read, cat, mmap, dup, exec, listing, cwd
    }

    /// Lets go of `root/f` (or of `root`) the given way; nil when done, else what failed.
    static func letGo(_ way: Way, _ root: String) -> String? {
        let file = root + "/f"
        switch way {
        case .read:
            let fd = open(file, O_RDONLY)
            guard fd >= 0 else { return "open: \(errnoName(errno))" }
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}
            close(fd)
        case .cat:
            return runQuietly(["/bin/cat", file])
        case .mmap:
            let fd = open(file, O_RDONLY)
            guard fd >= 0 else { return "open: \(errnoName(errno))" }
            let size = 1 << 20
            let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0)
            close(fd) // the mapping keeps the file: its RELEASE comes at munmap
            guard let map, map != MAP_FAILED else { return "mmap: \(errnoName(errno))" }
            var sum = 0
            for offset in stride(from: 0, to: size, by: 4096) { sum &+= Int(map.load(fromByteOffset: offset, as: UInt8.self)) }
            munmap(map, size)
            if sum == 0 { return "mapped file read as zeros" }
        case .dup:
            let fd = open(file, O_RDONLY)
            guard fd >= 0 else { return "open: \(errnoName(errno))" }
            let copy = dup(fd)
            var byte: UInt8 = 0
            _ = read(copy, &byte, 1)
            close(fd)
            close(copy)
        case .exec:
            return runQuietly([root + "/true"])
        case .listing:
            guard let dir = opendir(root + "/etc") else { return "opendir: \(errnoName(errno))" }
            while readdir(dir) != nil {}
            closedir(dir)
        case .cwd:
            break // a process sits in the sandbox while rmdir runs: see rmdirEveryWay
        }
        return nil
    }

    static func runQuietly(_ argv: [String], cwd: String? = nil) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        process.standardOutput = FileHandle.nullDevice
        if let cwd { process.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        do { try process.run() } catch { return "\(argv[0]): \(error)" }
        process.waitUntilExit()
        return process.terminationStatus == 0 ? nil : "\(argv[0]) exited \(process.terminationStatus)"
    }

    /// A sandbox with `f` (1 MiB of a pattern) and `true` (a copy of /bin/true) in it.
    static func prepare(_ root: String) -> String? {
        guard mkdir(root, 0o755) == 0 else { return "mkdir: \(errnoName(errno))" }
        let chunk = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        let fd = open(root + "/f", O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        guard fd >= 0 else { return "create f: \(errnoName(errno))" }
        let written = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == chunk.count else { return "write f: \(errnoName(errno))" }
        guard let binary = FileManager.default.contents(atPath: "/bin/true"),
              FileManager.default.createFile(atPath: root + "/true", contents: binary),
              chmod(root + "/true", 0o755) == 0 else { return "copy /bin/true: \(errnoName(errno))" }
        return nil
    }

    /// Every way of letting go, in rounds, right before rmdir, with CPU hogs running and another sandbox
    /// doing heavy I/O (its readahead fills the kernel's background queue that RELEASEs wait in).
    @Test func rmdirEveryWayUnderLoad() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        try fixture.start(["--log-level", "debug"]) // for the "release(s) arrived after" lines
        let load = try CPULoad(4)
        defer { load.stop() }
        let busy = fixture.sandbox("pi", "busy")
        try #require(mkdir(busy, 0o755) == 0)
        let rounds = Environment.engine == "dm" ? 2 : 6
        let done = Shared(false)
        let workers = Workers()
        let finished = workers.run(2, limit: ConcurrencySuite.limit) { index in
            if index == 0 {
                var pass = 0
                while !done.value {
                    if let problem = ConcurrencySuite.writeAndVerify("\(busy)/heavy.bin", mebibytes: 16, seed: UInt8(pass & 0xff)) {
                        workers.fail("I/O pass \(pass): \(problem)")
                        return
                    }
                    pass += 1
                }
                return
            }
            defer { done.update { $0 = true } }
            for round in 0..<rounds {
                for way in Way.allCases {
                    let root = fixture.sandbox("pi", "\(way.rawValue)\(round)")
                    if let problem = Self.prepare(root) {
                        workers.fail("\(root): \(problem)")
                        continue
                    }
                    var sitter: Process?
                    if way == .cwd {
                        let process = Process()
                        process.executableURL = URL(fileURLWithPath: "/bin/sleep")
                        process.arguments = ["600"]
                        process.currentDirectoryURL = URL(fileURLWithPath: root + "/etc")
                        do { try process.run() } catch { workers.fail("\(root): sleep: \(error)") }
                        sitter = process
                    } else if let problem = Self.letGo(way, root) {
                        workers.fail("\(root) \(way): \(problem)")
                    }
                    if rmdir(root) != 0 {
                        let error = errno
                        let said = fixture.log.filter { $0.contains("rmdir") }.suffix(2)
                        workers.fail("rmdir after \(way) in round \(round): \(errnoName(error)); daemon: \(said)")
                        // Free it for the suite's residue check once whatever held it is gone.
                        sitter.map { kill($0.processIdentifier, SIGKILL); $0.waitUntilExit() }
                        sitter = nil
                        _ = rmdir(root)
                    }
                    if let sitter {
                        // Its cwd went with the sandbox: nothing can be made there any more.
                        let made = open("/proc/\(sitter.processIdentifier)/cwd/new", O_CREAT | O_WRONLY, 0o644)
                        let error = errno
                        if made >= 0 { close(made) }
                        if made >= 0 || ![ESTALE, ENOENT].contains(error) {
                            workers.fail("create in the cwd of a process in \(root) after rmdir: \(made >= 0 ? "worked" : errnoName(error))")
                        }
                        kill(sitter.processIdentifier, SIGKILL)
                        sitter.waitUntilExit()
                    }
                }
            }
        }
        #expect(finished, "the rounds did not finish in \(ConcurrencySuite.limit)")
        #expect(workers.failures.isEmpty, "\(workers.failures)")
        load.stop()
        #expect(rmdir(busy) == 0)
        #expect(ConcurrencySuite.listingAgrees(fixture, image: "pi", expected: []).isEmpty)
        #expect(fixture.log.filter { $0.contains("refused") }.isEmpty, "\(fixture.log.filter { $0.contains("refused") })")
        #expect(fuseRequestsDrain(fixture.mountpoint), "a FUSE request stays unanswered")
        #expect(fixture.stop() == 0)
        // The figure this test is about: how long rmdirs waited for releases (printed, not asserted).
        let waits = fixture.log.compactMap { line in
            line.range(of: "release(s) arrived after ").flatMap { Double(line[$0.upperBound...].prefix { $0 != " " }) }
        }.sorted()
        print("ReleaseSuite: \(waits.count) of \(rounds * Way.allCases.count) rmdirs waited for releases; "
              + "median \(waits.isEmpty ? 0 : waits[waits.count / 2]) s, max \(waits.last ?? 0) s")
    }

    /// A file really open: EBUSY after the bounded wait, one log line with the count and the file's inode
    /// as the caller sees it, nothing changed; once closed, rmdir works at once.
    @Test func openFileGetsEBUSYAndALogLine() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let root = fixture.sandbox("pi", "held")
        try #require(mkdir(root, 0o755) == 0)
        try FileChecks.writeFile(root + "/etc/hostname", "held\n")
        let fd = open(root + "/etc/hostname", O_RDONLY)
        try #require(fd >= 0)
        var info = stat()
        #expect(fstat(fd, &info) == 0)
        #expect(rmdir(root) == -1 && errno == EBUSY)
        _ = fixture.waitForLog { $0.contains("rmdir pi/sandboxes/held refused") }
        let lines = fixture.log.filter { $0.contains("rmdir pi/sandboxes/held refused") }
        #expect(lines.count == 1, "\(fixture.log.suffix(5))")
        #expect(lines.first.map { $0.contains("1 handle(s) still open") && $0.contains("file inode \(info.st_ino)") } == true,
                "\(lines)")
        #expect(FileChecks.readFile(root + "/etc/hostname") == "held\n")
        close(fd)
        #expect(rmdir(root) == 0, "\(ErrnoName.of(errno)); the daemon's last lines: \(fixture.log.suffix(6))")
        #expect(fixture.stop() == 0)
    }
}
