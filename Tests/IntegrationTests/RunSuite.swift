import Foundation
import Glibc
import TestSupport
import Testing

/// `imgsandbox run` on an armhf Debian image (Tools/make-test-image armhf: debootstrap of Debian's armhf
/// packages, run through qemu-user), and its refusals. Every test ends with rmdir of its sandbox right
/// after the last run and the fixture's residue check (no mount, process or device left; image unchanged).
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct RunSuite {

    /// `imgsandbox run SANDBOX -- argv`, stdout and stderr together.
    static func run(_ sandbox: String, _ argv: [String], input: String? = nil) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Paths.binary)
        process.arguments = ["run", sandbox, "--"] + argv
        let output = Pipe(), stdin = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func sh(_ sandbox: String, _ script: String) throws -> (status: Int32, output: String) {
        try run(sandbox, ["sh", "-c", script])
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/proc/sys/fs/binfmt_misc/qemu-arm"),
                   "needs qemu-user-static registered with binfmt_misc (Tools/install-deps)"))
    func armhfImage() throws {
        let fixture = try ServeFixture(images: [("arm", "armhf", [])])
        defer { fixture.close() }
        try fixture.start()
        let s = fixture.sandbox("arm", "t1")
        #expect(mkdir(s, 0o755) == 0)

        #expect(try Self.run(s, ["uname", "-m"]) == (0, "armv7l\n"))
        #expect(try Self.run(s, ["hostname"]) == (0, "armhf-test\n"))
        #expect(try Self.sh(s, "echo out; echo err >&2; exit 3") == (3, "out\nerr\n"))
        #expect(try Self.sh(s, "kill -9 $$").status == 137)
        let missing = try Self.run(s, ["no-such-command"])
        #expect(missing.status == 127 && missing.output.contains("cannot execute no-such-command"), "\(missing)")

        // What the command sees.
        let devices = try Self.sh(s, "echo x > /dev/null && head -c 3 /dev/zero | wc -c && head -c 8 /dev/urandom | wc -c"
            + " && cat /proc/1/comm && test -c /dev/pts/ptmx && script -qec tty /dev/null && grep -q ' /sys sysfs ro,' /proc/self/mounts"
            + " && echo sys-ro && cat /etc/resolv.conf")
        let hostResolv = (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? ""
        #expect(devices.status == 0, "\(devices)")
        let lines = devices.output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.count >= 5 && lines[0] == "3" && lines[1] == "8", "\(devices)")
        #expect(lines.count >= 5 && lines[2] == "bwrap", "PID 1 is bubblewrap's init (its own PID namespace): \(devices)")
        #expect(lines.count >= 5 && lines[3].hasPrefix("/dev/pts/"), "\(devices)")
        #expect(devices.output.contains("sys-ro\n" + hostResolv), "\(devices)")

        // Every uid works: runuser, su, setpriv write in /tmp as nobody.
        let users = try Self.sh(s, """
            runuser -u nobody -- sh -c 'echo r > /tmp/by-runuser' &&
            su -s /bin/sh nobody -c 'echo s > /tmp/by-su' &&
            setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c 'echo p > /tmp/by-setpriv' &&
            stat -c '%U %n' /tmp/by-runuser /tmp/by-su /tmp/by-setpriv
            """)
        #expect(users == (0, "nobody /tmp/by-runuser\nnobody /tmp/by-su\nnobody /tmp/by-setpriv\n"), "\(users)")

        // Packages: dpkg -i and apt-get install ./pkg.deb of armhf packages whose postinst adds a system
        // user, runs a command as it and asks invoke-rc.d to start its service (refused: policy 101).
        for name in ["first", "second"] {
            let deb = try Self.buildPackage(name, in: fixture.work)
            #expect(Self.copy(deb, to: "\(s)/tmp/imgsandbox-\(name).deb"))
        }
        let dpkg = try Self.run(s, ["dpkg", "-i", "/tmp/imgsandbox-first.deb"])
        #expect(dpkg.status == 0, "\(dpkg)")
        let apt = try Self.run(s, ["apt-get", "install", "-y", "/tmp/imgsandbox-second.deb"])
        #expect(apt.status == 0, "\(apt)")
        #expect(!apt.output.contains("unsandboxed"), "\(apt)")
        for name in ["first", "second"] {
            #expect(FileChecks.readFile("\(s)/var/lib/imgsandbox-\(name)/whoami") == "imgsvc-\(name)\n")
            #expect(FileChecks.stat("\(s)/tmp/service-\(name)-started") == nil, "invoke-rc.d started the service")
        }
        #expect(dpkg.output.contains("policy-rc.d denied execution of start"), "\(dpkg)")
        #expect(FileChecks.stat("\(s)/usr/sbin/policy-rc.d") == nil, "run created a file in the sandbox")

        // Signals: SIGTERM to run reaches the command itself (its trap answers; were bwrap killed instead,
        // run would say 143), and the command's whole namespace then goes (the sleep it left).
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Paths.binary)
        process.arguments = ["run", s, "sh", "-c", "trap 'echo got-term; exit 7' TERM; sleep 300 & echo started; wait"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let started = pipe.fileHandleForReading.availableData
        #expect(String(decoding: started, as: UTF8.self) == "started\n")
        kill(process.processIdentifier, SIGTERM)
        let rest = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 7 && String(decoding: rest, as: UTF8.self) == "got-term\n")

        // An interactive login shell through a pty (script(1) on the host), then exit.
        let interactive = try Self.pty(s, input: "echo inside-$((6*7)); shopt -q login_shell && echo login-$0; exit 7\n")
        #expect(interactive.status == 7, "\(interactive)")
        #expect(interactive.output.contains("inside-42") && interactive.output.contains("login-/bin/bash"), "\(interactive)")

        #expect(rmdir(s) == 0, "rmdir right after run: \(errnoName(errno))")
        #expect(Residue.rootedProcesses(under: fixture.work).isEmpty)
        #expect(fixture.stop() == 0)
    }

    /// `imgsandbox run SANDBOX` (no command) on a pty made by script(1), with `input` typed in.
    static func pty(_ sandbox: String, input: String) throws -> (status: Int32, output: String) {
        try onTerminal("\(Paths.binary) run \(sandbox)", input: input)
    }

    /// `commandLine` run by sh on a pty made by script(1), with `input` typed in; its status and output.
    static func onTerminal(_ commandLine: String, input: String = "") throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        process.arguments = ["-qefc", commandLine, "/dev/null"]
        let output = Pipe(), stdin = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = stdin
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try? stdin.fileHandleForWriting.close()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func copy(_ from: String, to: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: from) else { return false }
        return FileManager.default.createFile(atPath: to, contents: data, attributes: [.posixPermissions: 0o644])
    }

    /// An armhf .deb built with dpkg-deb: an init script that would leave a mark if started, and a postinst
    /// that adds a system user, runs a command as it, enables the service and asks invoke-rc.d to start it.
    static func buildPackage(_ name: String, in work: String) throws -> String {
        let root = "\(work)/pkg-\(name)"
        try FileManager.default.createDirectory(atPath: "\(root)/DEBIAN", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(root)/etc/init.d", withIntermediateDirectories: true)
        try """
            Package: imgsandbox-\(name)
            Version: 1.0
            Architecture: armhf
            Maintainer: imgsandbox tests <tests@example.org>
            Depends: adduser, passwd
            Description: imgsandbox run test package
             Adds a system user and runs a command as it.

            """.write(toFile: "\(root)/DEBIAN/control", atomically: false, encoding: .utf8)
        try """
            #!/bin/sh
            set -e
            if [ "$1" = configure ]; then
                adduser --system --group --no-create-home --quiet imgsvc-\(name)
                mkdir -p /var/lib/imgsandbox-\(name)
                chown imgsvc-\(name) /var/lib/imgsandbox-\(name)
                runuser -u imgsvc-\(name) -- sh -c 'id -un > /var/lib/imgsandbox-\(name)/whoami'
                update-rc.d imgsandbox-\(name) defaults
                invoke-rc.d imgsandbox-\(name) start
            fi

            """.write(toFile: "\(root)/DEBIAN/postinst", atomically: false, encoding: .utf8)
        try """
            #!/bin/sh
            ### BEGIN INIT INFO
            # Provides:          imgsandbox-\(name)
            # Required-Start:
            # Required-Stop:
            # Default-Start:     2 3 4 5
            # Default-Stop:      0 1 6
            # Short-Description: marks that it was started
            ### END INIT INFO
            [ "$1" = start ] && touch /tmp/service-\(name)-started
            exit 0

            """.write(toFile: "\(root)/etc/init.d/imgsandbox-\(name)", atomically: false, encoding: .utf8)
        chmod("\(root)/DEBIAN/postinst", 0o755)
        chmod("\(root)/etc/init.d/imgsandbox-\(name)", 0o755)
        let deb = "\(work)/imgsandbox-\(name).deb"
        try IntegrationTests.run(["dpkg-deb", "--root-owner-group", "--build", root, deb])
        return deb
    }

    /// A tree for a native (amd64) image: static busybox as its shell.
    static func busyboxTree(in work: String, name: String) throws -> String {
        let root = "\(work)/\(name)"
        for dir in ["bin", "etc", "proc", "sys", "dev", "run", "tmp"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(dir)", withIntermediateDirectories: true)
        }
        #expect(copy("/bin/busybox", to: "\(root)/bin/busybox"))
        chmod("\(root)/bin/busybox", 0o755)
        try FileManager.default.createSymbolicLink(atPath: "\(root)/bin/sh", withDestinationPath: "busybox")
        try "root:x:0:0:root:/root:/bin/sh\n".write(toFile: "\(root)/etc/passwd", atomically: false, encoding: .utf8)
        return root
    }

    /// Refusals: not a sandbox, an architecture no handler runs, and image symlinks where mounts go
    /// (followed, they would put /dev or resolv.conf over a host path or another image file).
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/bin/busybox"), "needs busybox-static"))
    func refusals() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        // ia64: an ELF header no qemu-user emulates, so no binfmt_misc handler on any machine matches it.
        let foreign = try Self.busyboxTree(in: fixture.work, name: "foreign")
        var header = [UInt8](repeating: 0, count: 64)
        header[0...7] = [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]
        header[16] = 2
        header[18] = 50   // EM_IA_64
        header[20] = 1
        try Data(header).write(to: URL(fileURLWithPath: "\(foreign)/bin/ia64-tool"))
        chmod("\(foreign)/bin/ia64-tool", 0o755)
        try fixture.makeImage("foreign", kind: "whole-ext4", extra: ["--root-dir", foreign, "--size", "32M"])

        let devLink = try Self.busyboxTree(in: fixture.work, name: "devlink")
        try FileManager.default.removeItem(atPath: "\(devLink)/dev")
        try FileManager.default.createSymbolicLink(atPath: "\(devLink)/dev", withDestinationPath: "/etc")
        try fixture.makeImage("devlink", kind: "whole-ext4", extra: ["--root-dir", devLink, "--size", "32M"])

        let resolvLink = try Self.busyboxTree(in: fixture.work, name: "resolvlink")
        try "image's own secret\n".write(toFile: "\(resolvLink)/etc/secret", atomically: false, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: "\(resolvLink)/etc/resolv.conf", withDestinationPath: "/etc/secret")
        try fixture.makeImage("resolvlink", kind: "whole-ext4", extra: ["--root-dir", resolvLink, "--size", "32M"])

        let resolved = try Self.busyboxTree(in: fixture.work, name: "resolved")   // systemd-resolved's layout
        try FileManager.default.createSymbolicLink(atPath: "\(resolved)/etc/resolv.conf", withDestinationPath: "../run/systemd/resolve/stub-resolv.conf")
        try fixture.makeImage("resolved", kind: "whole-ext4", extra: ["--root-dir", resolved, "--size", "32M"])
        try fixture.start()

        let notSandbox = try Self.run("\(fixture.mountpoint)/foreign", ["true"])
        #expect(notSandbox.status == 125 && notSandbox.output.contains("is not a sandbox directory"), "\(notSandbox)")
        let notServed = try Self.run(fixture.work, ["true"])
        #expect(notServed.status == 125 && notServed.output.contains("not inside a mounted imgsandbox"), "\(notServed)")
        // A name with a terminal escape is printed escaped, as diff prints names.
        let hostile = try Self.run(fixture.work + "/no\u{1b}[2Jsuch\nline", ["true"])
        #expect(hostile.status == 125 && hostile.output.contains("no\\x1b[2Jsuch\\x0aline"), "\(hostile)")
        #expect(!hostile.output.contains("\u{1b}") && hostile.output.split(separator: "\n").count == 1, "\(hostile)")

        let f = fixture.sandbox("foreign", "s")
        #expect(mkdir(f, 0o755) == 0)
        #expect(try Self.run(f, ["sh", "-c", "echo native"]) == (0, "native\n"))
        let refused = try Self.run(f, ["/bin/ia64-tool"])
        #expect(refused.status == 125, "\(refused)")
        #expect(refused.output.contains("the image's programs are ia64") && refused.output.contains("apt-get install qemu-user-static"), "\(refused)")
        #expect(rmdir(f) == 0)

        let d = fixture.sandbox("devlink", "s")
        #expect(mkdir(d, 0o755) == 0)
        let hostEtc = HostSnapshot("/etc")
        let devRefused = try Self.run(d, ["true"])
        #expect(devRefused.status == 125 && devRefused.output.contains("cannot mount on the image's /dev: it is a symlink"), "\(devRefused)")
        #expect(HostSnapshot("/etc") == hostEtc)
        #expect(rmdir(d) == 0)

        // resolv.conf -> /etc/secret: never followed, so the host's resolv.conf covers nothing (bwrap would
        // mount on the link's target); the image's file it points at stays as it was, inside the run and after.
        let r = fixture.sandbox("resolvlink", "s")
        #expect(mkdir(r, 0o755) == 0)
        let inside = try Self.run(r, ["sh", "-c", "cat /etc/resolv.conf; echo ---; cat /etc/secret"])
        #expect(inside == (0, "image's own secret\n---\nimage's own secret\n"), "\(inside)")
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(r)/etc/resolv.conf")) == "/etc/secret")
        #expect(rmdir(r) == 0)

        // resolv.conf -> ../run/...: the host's resolv.conf at that place inside run's own /run.
        let d2 = fixture.sandbox("resolved", "s")
        #expect(mkdir(d2, 0o755) == 0)
        let hostResolv = (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? ""
        #expect(try Self.run(d2, ["sh", "-c", "cat /etc/resolv.conf"]) == (0, hostResolv))
        #expect(rmdir(d2) == 0)
        #expect(fixture.stop() == 0)
    }
}
