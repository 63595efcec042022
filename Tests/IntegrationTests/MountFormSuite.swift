import Foundation
import Glibc
import Testing

/// The mount form, with the arguments mount(8) and mount.fuse3 were seen (strace) to pass: mount.fuse3
/// runs `imgsandbox IMAGES_DIR MOUNTPOINT -o rw,OPTIONS,dev,suid` through /bin/sh (nofail, x-* dropped),
/// mount(8) runs `/sbin/mount.fuse.imgsandbox IMAGES_DIR MOUNTPOINT -o rw,OPTIONS -t fuse.imgsandbox`.
/// Each serves like background `serve`, takes serve's options as -o, and `umount` ends it without residue.
/// (mount(8) itself, the installed helper and an fstab line: Tools/install-test.)
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct MountFormSuite {
    @Test func asMountFuse3RunsIt() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        let options = "rw,cow-size=200M,engine=\(Environment.engine),allow_other,log_level=debug,dev,suid"
        let daemon = try MountForm.mount([Paths.binary, fixture.images, fixture.mountpoint, "-o", options], fixture: fixture)
        defer { MountForm.end(daemon, fixture: fixture) }
        let entry = try #require(MountForm.entry(fixture.mountpoint))
        #expect(entry.options.contains("nosuid") && entry.options.contains("nodev"), "dev,suid must not weaken the mount: \(entry.options)")
        #expect(entry.superOptions.contains("allow_other"), "allow_other did not reach the mount: \(entry.superOptions)")
        let sandbox = fixture.sandbox("pi", "m1")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        try FileChecks.writeFile("\(sandbox)/marker", "mounted")
        #expect(FileChecks.readFile("\(sandbox)/marker") == "mounted")
        // The -o options reached serve: the COW store has the budget asked for (not the default 512M;
        // overlay's total is its ext4's size, a little less than the device).
        let total = try fixture.status().first?["cow_total_bytes"] as? Int ?? 0
        #expect(total <= 200 << 20 && total > 150 << 20, "COW total \(total)")
        #expect(rmdir(sandbox) == 0)
        try run(["umount", fixture.mountpoint])
        #expect(DaemonModeSuite.waitForExit(daemon), "umount did not end the daemon")
    }

    @Test func asMountHelperWithGenericAndKernelOptions() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        let helper = fixture.work + "/mount.fuse.imgsandbox"
        try FileManager.default.createSymbolicLink(atPath: helper, withDestinationPath: Paths.binary)
        // mount(8)'s bare `group` is its own (ignored); `group=1501` is serve's --group.
        let options = "rw,cow-size=256M,engine=\(Environment.engine),nofail,_netdev,defaults,noauto,x-systemd.after=x,comment=y,noexec,noatime,group,group=1501"
        // With no environment at all: mount(8) removes PATH before it runs a helper.
        let daemon = try MountForm.mount(["/usr/bin/env", "-i", helper, fixture.images, fixture.mountpoint, "-o", options,
                                          "-t", "fuse.imgsandbox"], fixture: fixture)
        defer { MountForm.end(daemon, fixture: fixture) }
        let entry = try #require(MountForm.entry(fixture.mountpoint))
        #expect(entry.options.contains("noexec") && entry.options.contains("noatime"), "\(entry.options)")
        let top = FileChecks.stat(fixture.mountpoint)
        #expect(top.map { $0.st_mode & 0o7777 == 0o750 && $0.st_gid == 1501 } == true, "MOUNTPOINT of -o group=1501")
        let sandbox = fixture.sandbox("pi", "f1")
        #expect(mkdir(sandbox, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(rmdir(sandbox) == 0)
        try run(["umount", fixture.mountpoint])
        #expect(DaemonModeSuite.waitForExit(daemon), "umount did not end the daemon")
    }

    @Test func readOnlyMountRefusesSandboxes() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        let daemon = try MountForm.mount([Paths.binary, fixture.images, fixture.mountpoint, "-o", "ro,cow-size=256M,engine=\(Environment.engine)"],
                                         fixture: fixture)
        defer { MountForm.end(daemon, fixture: fixture) }
        #expect(MountForm.entry(fixture.mountpoint)?.options.hasPrefix("ro") == true)
        #expect(mkdir(fixture.sandbox("pi", "r1"), 0o755) == -1 && errno == EROFS, "mkdir on a ro mount: \(errno)")
        try run(["umount", fixture.mountpoint])
        #expect(DaemonModeSuite.waitForExit(daemon), "umount did not end the daemon")
    }

    /// A mistyped option fails the mount with serve's message, and nothing is mounted or left running.
    @Test func unknownOptionFailsTheMount() throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        let result = try run([Paths.binary, fixture.images, fixture.mountpoint, "-o", "rw,cow-sise=1G"], allowFailure: true)
        #expect(result.status == 64, "exit status \(result.status)")
        #expect(result.output.contains("cow-sise"), "mount said: \(result.output)")
        #expect(MountForm.entry(fixture.mountpoint) == nil)
    }
}

enum MountForm {
    /// Runs the mount form; returns the daemon's pid (from the mount's fsname imgsandbox-PID).
    static func mount(_ argv: [String], fixture: ServeFixture) throws -> Int32 {
        try run(argv)
        let entry = try #require(self.entry(fixture.mountpoint), "mount returned before the FUSE mount was there")
        return try #require(Int32(entry.source.dropFirst("imgsandbox-".count)), "fsname \(entry.source)")
    }

    /// After a failed expectation: stop the daemon, then check what it left.
    static func end(_ daemon: Int32, fixture: ServeFixture) {
        if kill(daemon, 0) == 0 { kill(daemon, SIGTERM); #expect(DaemonModeSuite.waitForExit(daemon)) }
        let residue = Residue.find(work: fixture.work, instance: daemon)
        #expect(residue.isEmpty, "left behind: \(residue)")
        if !residue.isEmpty { Residue.forceClean(work: fixture.work, instance: daemon) }
    }

    struct Entry: Equatable { let options: String, type: String, source: String, superOptions: String }

    static func entry(_ mountpoint: String) -> Entry? {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 5, fields[4] == mountpoint, let dash = fields.firstIndex(of: "-"), dash + 3 < fields.count,
                  fields[dash + 1] == "fuse.imgsandbox" else { continue }
            return Entry(options: String(fields[5]), type: String(fields[dash + 1]), source: String(fields[dash + 2]),
                         superOptions: String(fields[dash + 3]))
        }
        return nil
    }
}
