import Foundation
import Glibc
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
        #expect(second.output.contains("already served by imgsandbox-\(daemon)"), "second serve said: \(second.output)")
        #expect(FileChecks.readFile("\(sandbox)/marker") == "bg", "the refused serve left the live one alone")

        try run(["umount", fixture.mountpoint])
        #expect(Self.waitForExit(daemon), "umount did not end the daemon")
    }

    /// The daemon is not our child (serve's front process exited), so its end is polled for, bounded.
    static func waitForExit(_ pid: Int32, seconds: Int = 30) -> Bool {
        for _ in 0..<(seconds * 100) {
            if kill(pid, 0) != 0 && errno == ESRCH { return true }
            usleep(10_000)
        }
        return false
    }
}
