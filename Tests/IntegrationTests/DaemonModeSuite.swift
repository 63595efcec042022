import Foundation
import Glibc
import Sandbox
import TestSupport
import Testing

/// `serve` without --foreground, as users run it: it returns once the daemon serves, refuses a mountpoint
/// that a live daemon serves, and `umount` ends the daemon with nothing left behind.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct DaemonModeSuite {
    @Test func backgroundServeReadyRefusalAndUmount() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        let serve = [Paths.binary, "serve", "--engine", Environment.engine, "--cow-size", "256M", fixture.images, fixture.mountpoint]
        let started = try run(serve).output
        let pid = started.split(separator: "(pid ").dropFirst().first.flatMap { Int32($0.prefix { $0.isNumber }) }
        try #require(pid != nil, "serve said: \(started)")
        let daemon = pid!
        defer {
            // Whatever failed above: end the daemon, then look for residue of this instance.
            if kill(daemon, 0) == 0 { kill(daemon, SIGTERM); #expect(Self.waitForExit(daemon)) }
            let residue = Residue.find(work: fixture.work, instance: daemon)
            #expect(residue.isEmpty, "left behind: \(residue)")
            if !residue.isEmpty { Residue.forceClean(work: fixture.work, instance: daemon) }
        }
        #expect(Residue.mountPoints().contains(fixture.mountpoint), "serve returned before its mount was there")
        let sandbox = fixture.sandbox("pi", "bg")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        try FileChecks.writeFile("\(sandbox)/marker", "bg")
        #expect(try fixture.status().count == 1)

        let second = try run(serve, allowFailure: true)
        #expect(second.status != 0)
        #expect(second.output.contains("already served by \(InstanceNames(pid: daemon).fsName)"), "second serve said: \(second.output)")
        #expect(FileChecks.readFile("\(sandbox)/marker") == "bg", "the refused serve left the live one alone")

        try run(["umount", fixture.mountpoint])
        #expect(Self.waitForExit(daemon), "umount did not end the daemon")
    }

    /// A soft open-file limit of 1,024 (common outside this machine: seen in the VM) must not cap the
    /// daemon: its handle cache alone may hold 1,024 fds. serve raises it to the hard limit.
    @Test func aLowSoftFdLimitDoesNotCapTheDaemon() throws {
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        var saved = rlimit()
        #expect(getrlimit(resource, &saved) == 0)
        try #require(saved.rlim_max > 4096, "needs a hard limit well above 1,024")
        var low = saved
        low.rlim_cur = 1024
        #expect(setrlimit(resource, &low) == 0)
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        do {
            defer { _ = setrlimit(resource, &saved) }
            try fixture.start()  // inherits the low soft limit
        }
        let limits = try String(contentsOfFile: "/proc/\(try #require(fixture.pid))/limits", encoding: .utf8)
        let line = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }.map(String.init) ?? ""
        #expect(line.split(separator: " ").filter { !$0.isEmpty }.dropFirst(3).first == "\(saved.rlim_max)", "\(line)")
        let sandbox = fixture.sandbox("pi", "many")
        #expect(mkdir(sandbox, 0o755) == 0)
        var failures: [String] = []
        // chmod goes through the node's cached O_PATH fd: 2,000 of them fill the cache past 1,024.
        for index in 0..<2_000 where failures.count < 4 {
            let path = "\(sandbox)/f\(index)"
            let fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
            guard fd >= 0 else { failures.append("create f\(index): \(errnoName(errno))"); continue }
            close(fd)
            if chmod(path, 0o600) != 0 { failures.append("chmod f\(index): \(errnoName(errno))") }
        }
        #expect(failures.isEmpty, "creates failed: \(failures)")
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
    }

    /// The daemon is not our child (serve's front process exited), so its end is polled for, bounded.
    static func waitForExit(_ pid: Int32, seconds: Int = 30) -> Bool {
        ServeFixture.poll(seconds: seconds) { kill(pid, 0) != 0 && errno == ESRCH }
    }
}
