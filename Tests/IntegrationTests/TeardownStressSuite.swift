import CLinux
import Foundation
import Glibc
import Synchronization
import Testing

/// Issue 23's window: sandboxes under a mixed POSIX workload (passthrough opens, unlinks and renames of
/// open files, fifos, sockets, mmaps, O_TMPFILE) torn down while the CPU is loaded and while other mount
/// namespaces come and go (as other serve or run instances start on a busy machine). Every rmdir must
/// succeed, or answer EBUSY while something is really open (then the sandbox stays whole), also while a
/// namespace made after the mkdirs lives on; after the daemon stops no ext4 superblock (/sys/fs/ext4), sized
/// zram device, loop device (losetup) or dm device of ours is left, on either engine (dm: Tools/vm-test).
/// IMGSANDBOX_STRESS_ROUNDS (default 2, about a minute here) and IMGSANDBOX_STRESS_SECONDS (workload time
/// per round, default 3) make it longer.
@Suite(.serialized, .enabled(if: Environment.canServe && NamespaceTools.canHold, Environment.skipReason))
struct TeardownStressSuite {
    static let environment = ProcessInfo.processInfo.environment
    static let rounds = environment["IMGSANDBOX_STRESS_ROUNDS"].flatMap { Int($0) } ?? 2
    static let workSeconds = environment["IMGSANDBOX_STRESS_SECONDS"].flatMap { Double($0) } ?? 3
    static let sandboxesPerRound = 3

    /// Spinning threads, one per core, until stopped.
    final class CPULoad: Sendable {
        private let running = Atomic<Bool>(true)

        init() {
            for _ in 0..<max(2, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) {
                Thread { [self] in
                    var spins = 0
                    while running.load(ordering: .relaxed) { spins &+= 1 }
                }.start()
            }
        }

        func stop() { running.store(false, ordering: .relaxed) }
    }

    /// Mount namespaces that keep coming and going (each holds copies of every mount while it lives).
    // @unchecked: `done` and `made` are written behind `stopped` (`made` read after stop()); `thread` is set in init.
    final class NamespaceChurn: @unchecked Sendable {
        private let stopped = NSCondition()
        private var done = false
        private var thread: Thread?
        private(set) var made = 0

        init(work: String) {
            let thread = Thread { [self] in
                while stopped.withLock({ !done }) {
                    guard let holder = try? TeardownSuite.namespaceHolder(work: work) else { continue }
                    stopped.withLock {
                        made += 1
                        // Pacing, not synchronisation: each namespace lives up to 0.7 s, or until stop().
                        if !done { _ = stopped.wait(until: Date(timeIntervalSinceNow: 0.7)) }
                    }
                    holder.stop()
                }
                stopped.withLock { stopped.broadcast() }
            }
            self.thread = thread
            thread.start()
        }

        func stop() {
            stopped.withLock {
                done = true
                stopped.broadcast()
            }
            while thread?.isFinished == false { stopped.withLock { _ = stopped.wait(until: Date(timeIntervalSinceNow: 0.1)) } }
        }
    }

    /// What a workload leaves open for the EBUSY checks: an fd, and a shared mapping whose fd is closed.
    struct Held {
        var fd: Int32 = -1
        var mapping: UnsafeMutableRawPointer?
        var mappedBytes = 0

        mutating func release() {
            if fd >= 0 { close(fd) }
            if let mapping { munmap(mapping, mappedBytes) }
            fd = -1
            mapping = nil
        }
    }

    /// One sandbox's workload until `deadline`; returns what went wrong (nothing expected).
    static func workload(in root: String, until deadline: Date) -> [String] {
        var problems: [String] = []
        func check(_ ok: Bool, _ what: String) {
            if !ok, problems.count < 20 { problems.append("\(what): \(String(cString: strerror(errno)))") }
        }
        let dir = root + "/work"
        check(mkdir(dir, 0o755) == 0, "mkdir \(dir)")
        // Over 1 MiB: opened with passthrough (a backing file in the kernel).
        let big = dir + "/big"
        do { try FileChecks.writeBig(big, mebibytes: 2, seed: 7) } catch { problems.append("write \(big): \(error)") }
        let chunk = [UInt8](repeating: 0x5a, count: 65536)
        var round = 0
        while Date() < deadline {
            round += 1
            // A file written and synced.
            let a = "\(dir)/a\(round % 4)"
            var fd = open(a, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
            check(fd >= 0 && write(fd, chunk, chunk.count) == chunk.count && fsync(fd) == 0, "write \(a)")
            close(fd)
            // Passthrough read of the big file.
            fd = open(big, O_RDONLY)
            var buffer = [UInt8](repeating: 0, count: 4096)
            check(fd >= 0 && pread(fd, &buffer, buffer.count, 1 << 20) == buffer.count, "read \(big)")
            close(fd)
            // Unlink of an open file, then write through it.
            let b = "\(dir)/b"
            fd = open(b, O_CREAT | O_RDWR, 0o644)
            check(fd >= 0 && unlink(b) == 0 && write(fd, chunk, 4096) == 4096, "unlink open \(b)")
            close(fd)
            // Rename over an open file.
            let c = "\(dir)/c", d = "\(dir)/d"
            fd = open(c, O_CREAT | O_RDWR, 0o644)
            let fd2 = open(d, O_CREAT | O_WRONLY, 0o644)
            check(fd >= 0 && fd2 >= 0 && rename(d, c) == 0 && write(fd, chunk, 4096) == 4096, "rename over open \(c)")
            close(fd)
            close(fd2)
            // A fifo, open at both ends in one fd.
            let fifo = "\(dir)/fifo"
            check(mkfifo(fifo, 0o600) == 0, "mkfifo")
            fd = open(fifo, O_RDWR | O_NONBLOCK)
            var byte: UInt8 = 1
            check(fd >= 0 && write(fd, &byte, 1) == 1 && read(fd, &byte, 1) == 1, "fifo")
            close(fd)
            unlink(fifo)
            // A unix socket bound in the sandbox, connected to.
            let socketPath = "\(dir)/sock"
            check(socketRoundTrip(socketPath), "socket \(socketPath)")
            unlink(socketPath)
            // A shared writable mapping of the passthrough file.
            fd = open(big, O_RDWR)
            if fd >= 0, let map = mmap(nil, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED {
                map.storeBytes(of: UInt8(round & 0xff), toByteOffset: 4096, as: UInt8.self)
                check(msync(map, 1 << 20, MS_SYNC) == 0, "msync")
                munmap(map, 1 << 20)
            } else {
                check(false, "mmap \(big)")
            }
            close(fd)
            // O_TMPFILE (libfuse 3.17's tmpfile operation), then given a name.
            let named = "\(dir)/tmp\(round % 2)"
            unlink(named)
            if Environment.libfuseHas317 {
                fd = open(dir, clinux_O_TMPFILE | O_RDWR, 0o600)
                check(fd >= 0 && write(fd, chunk, 4096) == 4096
                      && linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, named, AT_SYMLINK_FOLLOW) == 0, "O_TMPFILE")
                close(fd)
            } else {
                fd = open(named, O_CREAT | O_WRONLY, 0o600)
                close(fd)
            }
            // Directories, links, modes, sizes.
            let sub = "\(dir)/sub"
            check(mkdir(sub, 0o755) == 0 && symlink("../a0", "\(sub)/l") == 0 && link(named, "\(sub)/h") == 0
                  && chmod(named, 0o600) == 0 && truncate(named, 100) == 0, "tree")
            unlink("\(sub)/l")
            unlink("\(sub)/h")
            check(rmdir(sub) == 0, "rmdir \(sub)")
        }
        return problems
    }

    static func socketRoundTrip(_ path: String) -> Bool {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return true }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, value) in bytes.enumerated() { raw[index] = value }
        }
        let server = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0), client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(server); close(client) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let ok = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bind(server, address, length) == 0 && listen(server, 1) == 0 && connect(client, address, length) == 0
            }
        }
        guard ok else { return false }
        let accepted = accept(server, nil, nil)
        defer { close(accepted) }
        var byte: UInt8 = 7
        return accepted >= 0 && write(client, &byte, 1) == 1 && read(accepted, &byte, 1) == 1
    }

    @Test func mixedWorkloadsTornDownUnderLoadAndNamespaceChurnLeaveNothing() throws {
        let before = TeardownSuite.kernelObjects()
        let fixture = try ServeFixture(images: [("disk", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let load = CPULoad()
        defer { load.stop() }
        let churn = NamespaceChurn(work: fixture.work)
        defer { churn.stop() }
        for round in 0..<Self.rounds {
            let names = (0..<Self.sandboxesPerRound).map { "r\(round)s\($0)" }
            for name in names {
                #expect(mkdir(fixture.sandbox("disk", name), 0o755) == 0, "mkdir \(name): \(String(cString: strerror(errno)))")
            }
            if round == 0 { TeardownSuite.expectSandboxObjects(TeardownSuite.kernelObjects().subtracting(before)) }
            // And one namespace that outlives the round's rmdirs (the churn's end within the zram reset's retries):
            // root's, or every other round an unprivileged user's, whose copies the kernel locks.
            let user: uid_t? = round % 2 == 1 && NamespaceTools.usersMakeNamespaces ? 65534 : nil
            let holder = try TeardownSuite.namespaceHolder(work: fixture.work, user: user)
            defer { holder.stop() }
            let deadline = Date(timeIntervalSinceNow: Self.workSeconds)
            let problems = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: names.count) { index in
                let found = Self.workload(in: fixture.sandbox("disk", names[index]), until: deadline)
                problems.withLock { $0 += found.map { "\(names[index]): \($0)" } }
            }
            #expect(problems.withLock { $0 }.isEmpty, "\(problems.withLock { $0 })")
            for (index, name) in names.enumerated() {
                let sandbox = fixture.sandbox("disk", name)
                // Held open: rmdir answers EBUSY and the sandbox stays whole. A mapping whose fd is closed
                // (the FUSE file is released; the kernel keeps the backing file) every time; an open fd (rmdir
                // waits 5 s for releases first) once per round.
                var held = Held()
                held.fd = index == 0 ? open("\(sandbox)/work/big", O_RDONLY) : -1
                let mapFD = open("\(sandbox)/work/big", O_RDONLY)
                held.mappedBytes = 1 << 20
                let map = mmap(nil, held.mappedBytes, PROT_READ, MAP_SHARED, mapFD, 0)
                close(mapFD)
                #expect(map != MAP_FAILED)
                held.mapping = map == MAP_FAILED ? nil : map
                #expect(rmdir(sandbox) != 0 && errno == EBUSY, "rmdir \(name) with a file of it held")
                held.release()
                #expect(rmdir(sandbox) == 0, "rmdir \(name): \(String(cString: strerror(errno)))")
            }
            let states = try fixture.status().compactMap { $0["state"] as? String }
            #expect(states.isEmpty, "sandboxes left: \(states)")
        }
        churn.stop()
        load.stop()
        #expect(fixture.stop() == 0)
        #expect(!fixture.log.contains { $0.contains("is broken") }, "a teardown stopped half-way")
        #expect(TeardownSuite.kernelObjects().subtracting(before).isEmpty, "left: \(TeardownSuite.kernelObjects().subtracting(before))")
        #expect(churn.made > 0)
    }
}
