import Foundation
import Glibc
import Synchronization
import TestSupport
import Testing

/// Runs `count` workers on their own threads and waits for all of them, at most `limit`: a worker
/// stuck in a FUSE request (a deadlock in the daemon) shows up as a timeout, not a hung suite.
/// Workers report problems as strings; #expect is called on the test's own thread.
final class Workers: Sendable {
    private let problems = Mutex<[String]>([])

    func fail(_ text: String) { problems.withLock { $0.append(text) } }
    var failures: [String] { problems.withLock { $0 } }

    /// True when every worker returned in time.
    func run(_ count: Int, limit: DispatchTimeInterval, _ body: @escaping @Sendable (Int) -> Void) -> Bool {
        let group = DispatchGroup()
        for index in 0..<count {
            group.enter()
            let thread = Thread {
                body(index)
                group.leave()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        return group.wait(timeout: .now() + limit) == .success
    }
}

/// A value shared by worker threads (Mutex itself cannot be captured by an escaping closure).
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func update<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
    var value: Value { mutex.withLock { $0 } }
}


/// The FUSE connection's count of requests the daemon has not answered yet (0 when nothing is stuck).
/// Mounts fusectl for the call when the machine has it unmounted, and unmounts it again.
func fuseRequestsWaiting(_ mountpoint: String) -> Int? {
    var info = stat()
    guard stat(mountpoint, &info) == 0 else { return nil }
    let minor = UInt64(info.st_dev) & 0xff | (UInt64(info.st_dev) >> 12) & ~UInt64(0xff)
    let connections = "/sys/fs/fuse/connections"
    var mountedHere = false
    if !FileManager.default.fileExists(atPath: "\(connections)/\(minor)") {
        mountedHere = mount("fusectl", connections, "fusectl", 0, nil) == 0
    }
    defer { if mountedHere { umount(connections) } }
    return Residue.read("\(connections)/\(minor)/waiting").flatMap { Int($0) }
}

/// No request stays unanswered. Asynchronous ones (RELEASE, RELEASEDIR, FORGET) may still be in flight
/// when the test looks, so the daemon gets a bounded number of synchronous round trips (statfs) to drain
/// them; a stuck request would stay counted through all of them.
func fuseRequestsDrain(_ mountpoint: String) -> Bool {
    for _ in 0..<200 {
        guard let waiting = fuseRequestsWaiting(mountpoint) else { return false }
        if waiting == 0 { return true }
        var fs = statvfs()
        _ = statvfs(mountpoint, &fs)
    }
    return false
}

/// Many mkdirs and rmdirs at once, racing on one name, and heavy I/O while others come and go: no
/// deadlock, no unanswered FUSE request, listings that agree with lookups, nothing left behind.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct ConcurrencySuite {
    static let limit = DispatchTimeInterval.seconds(Environment.engine == "dm" ? 900 : 240)

    /// Every name listed in sandboxes/ can be looked up, and every lookup that works is listed.
    static func listingAgrees(_ fixture: ServeFixture, image: String, expected: Set<String>) -> [String] {
        let directory = "\(fixture.mountpoint)/\(image)/sandboxes"
        let listed = Set((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? ["<unreadable>"])
        var problems: [String] = []
        if listed != expected { problems.append("\(image): listed \(listed.sorted()), expected \(expected.sorted())") }
        for name in listed where FileChecks.stat("\(directory)/\(name)") == nil {
            problems.append("\(image)/\(name) is listed but lookup fails: \(errnoName(errno))")
        }
        return problems
    }

    @Test func eightConcurrentMkdirsAndRmdirsOnTwoImages() throws {
        let fixture = try ServeFixture(images: [("one", "rpi", []), ("two", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        // Five of one image, three of the other: same-image mkdirs serialise on the image, the others overlap.
        let targets = (0..<8).map { index in (image: index < 5 ? "one" : "two", name: "c\(index)") }
        let workers = Workers()
        let created = workers.run(targets.count, limit: Self.limit) { index in
            let (image, name) = targets[index]
            if mkdir(fixture.sandbox(image, name), 0o755) != 0 {
                workers.fail("mkdir \(image)/\(name): \(errnoName(errno))")
            } else if (try? FileChecks.writeFile("\(fixture.sandbox(image, name))/mine", name)) == nil {
                workers.fail("write in \(image)/\(name): \(errnoName(errno))")
            }
        }
        #expect(created, "8 concurrent mkdirs did not finish in \(Self.limit)")
        #expect(workers.failures.isEmpty, "\(workers.failures)")
        for (image, name) in targets { #expect(FileChecks.readFile("\(fixture.sandbox(image, name))/mine") == name) }
        #expect(Self.listingAgrees(fixture, image: "one", expected: ["c0", "c1", "c2", "c3", "c4"]).isEmpty)
        #expect(Self.listingAgrees(fixture, image: "two", expected: ["c5", "c6", "c7"]).isEmpty)
        #expect(try fixture.status().count == 8)

        let removed = workers.run(targets.count, limit: Self.limit) { index in
            let (image, name) = targets[index]
            if rmdir(fixture.sandbox(image, name)) != 0 { workers.fail("rmdir \(image)/\(name): \(errnoName(errno))") }
        }
        #expect(removed, "8 concurrent rmdirs did not finish in \(Self.limit)")
        #expect(workers.failures.isEmpty, "\(workers.failures)")
        #expect(Self.listingAgrees(fixture, image: "one", expected: []).isEmpty)
        #expect(Self.listingAgrees(fixture, image: "two", expected: []).isEmpty)
        #expect(try fixture.status().isEmpty)
        #expect(fuseRequestsDrain(fixture.mountpoint), "a FUSE request stays unanswered")
        #expect(fixture.stop() == 0)
    }

    /// Threads race mkdir and rmdir of the same names. Each call either works or gives the errno the race
    /// explains (EEXIST, ENOENT, EBUSY); at every pause the listing and lookups agree.
    @Test func mkdirAndRmdirOfTheSameNameRace() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let names = ["x", "y"]
        let rounds = Environment.engine == "dm" ? 3 : 6
        let successes = Shared((made: 0, removed: 0))
        for round in 0..<rounds {
            let workers = Workers()
            let finished = workers.run(6, limit: Self.limit) { index in
                let path = fixture.sandbox("pi", names[index % names.count])
                for step in 0..<4 {
                    if (index + step) % 2 == 0 {
                        if mkdir(path, 0o755) == 0 {
                            successes.update { $0.made += 1 }
                        } else if errno != EEXIST {
                            workers.fail("round \(round) mkdir \(path): \(errnoName(errno))")
                        }
                    } else {
                        if rmdir(path) == 0 {
                            successes.update { $0.removed += 1 }
                        } else if ![ENOENT, EBUSY].contains(errno) {
                            workers.fail("round \(round) rmdir \(path): \(errnoName(errno))")
                        }
                    }
                }
            }
            #expect(finished, "round \(round) did not finish in \(Self.limit)")
            #expect(workers.failures.isEmpty, "\(workers.failures)")
            // Quiet now: what is listed is exactly what exists.
            let existing = Set(names.filter { FileChecks.stat(fixture.sandbox("pi", $0)) != nil })
            #expect(Self.listingAgrees(fixture, image: "pi", expected: existing).isEmpty, "round \(round)")
            #expect(try fixture.status().count == existing.count)
            for name in existing { #expect(FileChecks.readFile("\(fixture.sandbox("pi", name))/etc/hostname") == "raspberrypi\n") }
        }
        let (made, removed) = successes.value
        #expect(made > 0 && removed > 0, "the race made \(made) and removed \(removed) sandboxes")
        for name in names where FileChecks.stat(fixture.sandbox("pi", name)) != nil {
            #expect(rmdir(fixture.sandbox("pi", name)) == 0)
        }
        #expect(Self.listingAgrees(fixture, image: "pi", expected: []).isEmpty)
        #expect(fuseRequestsDrain(fixture.mountpoint), "a FUSE request stays unanswered")
        #expect(fixture.stop() == 0)
    }

    /// One sandbox writes and verifies a large file over and over while others are created, used and
    /// destroyed around it, on the same image and on another. Bounded: a fixed number of iterations.
    @Test func heavyIOWhileOthersComeAndGo() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", []), ("other", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let busy = fixture.sandbox("pi", "busy")
        #expect(mkdir(busy, 0o755) == 0)
        let churnersDone = Shared(0)
        let passes = Shared(0)
        let iterations = Environment.engine == "dm" ? 3 : 8
        let workers = Workers()
        let finished = workers.run(4, limit: Self.limit) { index in
            if index == 0 {
                // The I/O worker: 32 MiB written, synced, read back and compared, until the churn ends (at least twice).
                var pass = 0
                while churnersDone.value < 3 || pass < 2 {
                    if let problem = Self.writeAndVerify("\(busy)/heavy.bin", mebibytes: 32, seed: UInt8(pass & 0xff)) {
                        workers.fail("I/O pass \(pass): \(problem)")
                        return
                    }
                    pass += 1
                }
                passes.update { $0 = pass }
                return
            }
            // Churn workers: 1 and 2 on the busy sandbox's image, 3 on the other image.
            let image = index == 3 ? "other" : "pi"
            for iteration in 0..<iterations {
                let path = fixture.sandbox(image, "w\(index)-\(iteration)")
                guard mkdir(path, 0o755) == 0 else {
                    workers.fail("mkdir \(path): \(errnoName(errno))")
                    continue
                }
                if (try? FileChecks.writeFile("\(path)/tag", path)) == nil || FileChecks.readFile("\(path)/tag") != path {
                    workers.fail("write/read in \(path): \(errnoName(errno))")
                }
                // Listing the directory while others change it must never show a half-made name.
                let listed = (try? FileManager.default.contentsOfDirectory(atPath: "\(fixture.mountpoint)/\(image)/sandboxes")) ?? []
                if !listed.contains(path.split(separator: "/").last.map(String.init) ?? "") {
                    workers.fail("\(path) missing from its listing \(listed)")
                }
                if rmdir(path) != 0 {
                    let error = errno
                    let name = path.split(separator: "/").last.map(String.init) ?? path
                    _ = fixture.waitForLog(timeout: 5) { $0.contains("rmdir") && $0.contains(name) }
                    let said = fixture.log.filter { $0.contains("rmdir") && $0.contains(name) }.suffix(2)
                    workers.fail("rmdir \(path): \(errnoName(error)); daemon: \(said)")
                }
            }
            // When all three churn workers are done, the I/O worker may stop.
            churnersDone.update { $0 += 1 }
        }
        #expect(finished, "heavy I/O with churn did not finish in \(Self.limit)")
        #expect(workers.failures.isEmpty, "\(workers.failures)")
        #expect(passes.value >= 2)
        #expect(Self.listingAgrees(fixture, image: "pi", expected: ["busy"]).isEmpty)
        #expect(Self.listingAgrees(fixture, image: "other", expected: []).isEmpty)
        #expect(rmdir(busy) == 0)
        #expect(fuseRequestsDrain(fixture.mountpoint), "a FUSE request stays unanswered")
        #expect(fixture.stop() == 0)
    }

    /// Writes `mebibytes` of a seeded pattern, fsyncs, reads back; nil when all matched.
    static func writeAndVerify(_ path: String, mebibytes: Int, seed: UInt8) -> String? {
        let chunk = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ Int(seed)) }
        let fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0o644)
        guard fd >= 0 else { return "open: \(errnoName(errno))" }
        defer { close(fd) }
        for _ in 0..<mebibytes {
            let written = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written == chunk.count else { return "write: \(written) \(errnoName(errno))" }
        }
        guard fsync(fd) == 0 else { return "fsync: \(errnoName(errno))" }
        var back = [UInt8](repeating: 0, count: 1 << 20)
        for index in 0..<mebibytes {
            let count = back.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(index << 20)) }
            guard count == back.count, back == chunk else { return "MiB \(index) read back differently (\(count) bytes)" }
        }
        return nil
    }
}
