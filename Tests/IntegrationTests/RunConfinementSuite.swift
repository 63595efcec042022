import Foundation
import Glibc
import TestSupport
import Testing

/// Issue 22, "Why" item 1: each escape root code from an image made through `imgsandbox run`, tried again
/// from inside a run, on the x86_64 image (busybox and a static probe built here) and on the armhf one
/// (Debian through qemu-user, perl as the probe). One sandbox per image; every attempt is harmless to the
/// host if it succeeds (no write to a host device, core_pattern rewritten with its own value, mounts made
/// only in the run's own namespace), so the suite can be pointed at an old binary (IMGSANDBOX_BIN) to
/// watch it fail.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct RunConfinementSuite {
    /// How the probe is started inside the image.
    struct Image {
        let name: String
        let probe: [String]
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/bin/busybox") && FileManager.default.isExecutableFile(atPath: "/usr/bin/gcc"),
                   "needs busybox-static and gcc (Tools/install-deps)"))
    func x86_64Image() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        let tree = try RunSuite.busyboxTree(in: fixture.work, name: "x86")
        try FileManager.default.createSymbolicLink(atPath: "\(tree)/bin/ls", withDestinationPath: "busybox")
        for dir in ["usr/local/bin", "tmp/fc", "var"] {
            try FileManager.default.createDirectory(atPath: "\(tree)/\(dir)", withIntermediateDirectories: true)
        }
        try run(["/usr/bin/gcc", "-static", "-O2", "-o", "\(tree)/usr/local/bin/escape-probe", Self.probeSource + ".c"])
        try fixture.makeImage("x86", kind: "whole-ext4", extra: ["--root-dir", tree, "--size", "32M"])
        try fixture.start()
        try attempts(fixture, Image(name: "x86", probe: ["/usr/local/bin/escape-probe"]))
        #expect(fixture.stop() == 0)
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/proc/sys/fs/binfmt_misc/qemu-arm"),
                   "needs qemu-user-static registered with binfmt_misc (Tools/install-deps)"))
    func armhfImage() throws {
        let fixture = try ServeFixture(images: [("arm", "armhf", [])])
        defer { fixture.close() }
        try fixture.start()
        try attempts(fixture, Image(name: "arm", probe: ["perl", "/tmp/escape-probe.pl"]))
        #expect(fixture.stop() == 0)
    }

    static let probeSource = Paths.packageRoot + "/Tests/IntegrationTests/Probes/escape-probe"

    func attempts(_ fixture: ServeFixture, _ image: Image) throws {
        let s = fixture.sandbox(image.name, "escape")
        #expect(mkdir(s, 0o755) == 0)
        #expect(RunSuite.copy(Self.probeSource + ".pl", to: "\(s)/tmp/escape-probe.pl"))
        try FileManager.default.createDirectory(atPath: "\(s)/tmp/fc", withIntermediateDirectories: true)
        let hostMarker = "\(fixture.work)/host-only-marker"
        #expect(FileManager.default.createFile(atPath: hostMarker, contents: Data("host\n".utf8)))
        let probe = image.probe.joined(separator: " ")
        let corePattern = try String(contentsOfFile: "/proc/sys/kernel/core_pattern", encoding: .utf8)

        // The caller holds fd 3 open on the host's / when it starts run.
        let script = """
            mknod /dev/imgsandbox-loop0 b 7 0 2>/dev/null && dd if=/dev/imgsandbox-loop0 of=/dev/null bs=512 count=1 2>/dev/null && echo mknod-opened
            \(probe) chroot-escape \(hostMarker)
            v=$(cat /proc/sys/kernel/core_pattern); printf '%s\\n' "$v" 2>/dev/null > /proc/sys/kernel/core_pattern && echo core-pattern-written
            mount -o remount,rw /sys 2>/dev/null && echo sys-remounted
            grep -q ' /sys sysfs ro,' /proc/self/mounts && echo sys-read-only
            mount -t fusectl fusectl /tmp/fc 2>/dev/null && echo fusectl-mounted
            mount -t tmpfs tmpfs /tmp/fc 2>/dev/null && echo tmpfs-mounted
            test -e /proc/$$/fd/3 && echo fd3-inherited
            \(probe) keyctl
            \(probe) open_by_handle_at
            \(probe) name_to_handle_at
            \(probe) userns
            unshare -U true 2>/dev/null && echo unshare-tool-allowed
            grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status
            readlink /proc/self/ns/ipc
            grep -E ' rw(,| )' /proc/self/mounts | grep -v nodev | sed 's/^/writable-with-devices /'
            for f in /dev/* /dev/shm/* /dev/pts/*; do if [ ! -L "$f" ] && { [ -c "$f" ] || [ -b "$f" ]; }; then echo "device $f"; fi; done
            true
            """
        let inside = try Self.withFDsOnRoot([Paths.binary, "run", s, "--", "sh", "-c", script])
        #expect(inside.status == 0, "\(inside)")
        let lines = Set(inside.output.split(separator: "\n").map(String.init))
        #expect(!lines.contains("mknod-opened"), "a block device node made inside opened a host device: \(inside.output)")
        #expect(lines.contains("chroot-escape contained"), "double chroot: \(inside.output)")
        #expect(!lines.contains("core-pattern-written"), "/proc/sys/kernel/core_pattern is writable: \(inside.output)")
        #expect((try? String(contentsOfFile: "/proc/sys/kernel/core_pattern", encoding: .utf8)) == corePattern)
        #expect(!lines.contains("sys-remounted") && lines.contains("sys-read-only"), "/sys: \(inside.output)")
        #expect(!lines.contains("fusectl-mounted") && !lines.contains("tmpfs-mounted"), "mount: \(inside.output)")
        #expect(!lines.contains("fd3-inherited"), "the caller's fd 3 reached the command: \(inside.output)")
        // The command as bwrap starts it (no shell's own descriptors in between): 0, 1, 2 and ls's directory.
        let fds = try Self.withFDsOnRoot([Paths.binary, "run", s, "--", "ls", "/proc/self/fd"])
        #expect(fds == (0, "0\n1\n2\n3\n"), "descriptors 3 and up reached the command: \(fds)")
        // qemu-user answers keyctl itself (ENOSYS); name_to_handle_at needs no capability, so only the
        // filter makes it fail.
        #expect(lines.contains("keyctl EPERM") || (image.name == "arm" && lines.contains("keyctl ENOSYS")), "seccomp: \(inside.output)")
        #expect(lines.contains("name_to_handle_at EPERM"), "seccomp: \(inside.output)")
        #expect(lines.contains("open_by_handle_at EPERM"), "seccomp: \(inside.output)")
        // No new user namespace (qemu-user refuses clone with CLONE_NEWUSER itself, and has no clone3).
        #expect(lines.contains("unshare-user EPERM") && !lines.contains("unshare-tool-allowed"), "user namespace: \(inside.output)")
        if image.name != "arm" {
            #expect(lines.contains("clone-user EPERM") && lines.contains("clone3-user ENOSYS"), "user namespace: \(inside.output)")
        }
        #expect(lines.contains("NoNewPrivs:\t1") && lines.contains("Seccomp:\t2"), "\(inside.output)")
        for field in ["CapBnd", "CapEff"] {
            let value = lines.first { $0.hasPrefix(field + ":") }.flatMap { UInt64($0.dropFirst(field.count + 1).trimmingPrefix("\t"), radix: 16) }
            #expect(value != nil, "\(field): \(inside.output)")
            for (name, bit) in Self.droppedCapabilities where value.map({ $0 & (1 << bit) != 0 }) ?? false {
                Issue.record("\(field) has \(name): \(inside.output)")
            }
            #expect(value.map { $0 & (1 << 0) != 0 && $0 & (1 << 7) != 0 } ?? false, "CAP_CHOWN and CAP_SETUID kept: \(inside.output)")
        }
        let hostIPC = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/ipc")
        #expect(lines.contains { $0.hasPrefix("ipc:[") } && !lines.contains(hostIPC), "own IPC namespace: \(inside.output)")
        // Writable mounts without nodev: only bwrap's binds of single device nodes, and devpts (ptys only).
        for line in lines where line.hasPrefix("writable-with-devices ") {
            let fields = line.split(separator: " ")
            #expect(fields.count > 3 && ["devtmpfs", "devpts"].contains(fields[3]), "\(line)")
        }
        let devices = Set(lines.filter { $0.hasPrefix("device ") })
        #expect(devices == Set(["null", "zero", "full", "random", "urandom", "tty", "pts/ptmx"].map { "device /dev/\($0)" }), "\(devices)")

        // --privileged: the image's code is trusted, root keeps what it has (mounts work, no filter).
        let trusted = try Self.runArguments(["run", "--privileged", s, "--", "sh", "-c",
                                             "mount -t tmpfs tmpfs /tmp/fc && echo mounted; grep -E '^Seccomp:' /proc/self/status"])
        #expect(trusted == (0, "mounted\nSeccomp:\t0\n"), "\(trusted)")

        try tiocsti(fixture, sandbox: s, probe: probe)
        try windowSize(sandbox: s)
        try network(sandbox: s, probe: probe)

        #expect(rmdir(s) == 0, "rmdir right after run: \(errnoName(errno))")
        #expect(Residue.rootedProcesses(under: fixture.work).isEmpty)
    }

    static let droppedCapabilities: [(String, UInt64)] = [
        ("SYS_ADMIN", 21), ("SYS_MODULE", 16), ("SYS_RAWIO", 17), ("SYS_BOOT", 22), ("SYS_TIME", 25), ("SYSLOG", 34),
        ("MKNOD", 27), ("NET_ADMIN", 12), ("SYS_PTRACE", 19), ("MAC_ADMIN", 33), ("BPF", 39), ("PERFMON", 38),
        ("DAC_READ_SEARCH", 2),
    ]

    /// TIOCSTI from inside a run started on a terminal (a pty made by script(1)): the pushed command line
    /// must not reach the caller's terminal (and the command's pty has the caller's window size). After run exits, the outer shell reads what is queued on its
    /// terminal and runs it, as an interactive shell would.
    func tiocsti(_ fixture: ServeFixture, sandbox: String, probe: String) throws {
        let pwned = "\(fixture.work)/pwned"
        let outer = "\(fixture.work)/outer.sh"
        try """
            stty rows 33 cols 101
            \(Paths.binary) run \(sandbox) -- sh -c 'stty size; \(probe) tiocsti "touch \(pwned)"'
            echo "run-status=$?"
            stty -icanon min 0 time 0
            queued=$(cat)
            printf 'queued=[%s]\\n' "$queued"
            eval "$queued"
            """.write(toFile: outer, atomically: false, encoding: .utf8)
        let text = try RunSuite.onTerminal("sh \(outer)").output
        #expect(text.contains("run-status=0"), "\(text)")
        #expect(text.contains("33 101"), "the caller's window size reaches the command's pty: \(text)")
        #expect(text.contains("queued=[]"), "\(text)")
        #expect(FileChecks.stat(pwned) == nil, "TIOCSTI pushed a command into the caller's terminal: \(text)")
    }

    /// The caller's terminal is resized while the command runs (a helper does it once the command says it
    /// is ready, through a FIFO in the sandbox): run relays SIGWINCH, and the command's pty takes the new
    /// size. stty sets rows and columns with one ioctl each, so the command may see 40x101 first: it waits
    /// for up to two signals (each ends a `wait`) until its size is 40x120. The `sleep` only bounds a wait:
    /// the test hangs for nothing if no signal comes.
    func windowSize(sandbox: String) throws {
        let fifo = "\(sandbox)/tmp/winch"
        unlink(fifo)
        #expect(mkfifo(fifo, 0o600) == 0)
        let command = #"trap "stty size" WINCH; stty size; echo ready > /tmp/winch; n=0; "#
            + #"until [ "$(stty size)" = "40 120" ] || [ $n -ge 2 ]; do sleep 60 & wait $!; n=$((n+1)); done; "#
            + #"[ "$(stty size)" = "40 120" ] || echo no-resize"#
        let outer = """
            stty rows 33 cols 101
            ( read ready < \(fifo); stty rows 40 cols 120 < /dev/tty ) &
            \(Paths.binary) run \(sandbox) -- sh -c '\(command)'
            echo "run-status=$?"
            """
        let text = try RunSuite.onTerminal(outer).output
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(lines.contains("run-status=0") && !lines.contains("no-resize"), "\(text)")
        // stty may set rows and columns one at a time: the trap can run once for each signal.
        let sizes = lines.filter { $0.range(of: #"^[0-9]+ [0-9]+$"#, options: .regularExpression) != nil }
        #expect(sizes.first == "33 101" && sizes.last == "40 120", "\(text)")
        unlink(fifo)
    }

    /// `--network none`: a listener on the host's 127.0.0.1 is out of reach; with the default (host)
    /// network the same probe connects, so the check can tell.
    func network(sandbox: String, probe: String) throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) == 0 && listen(listener, 8) == 0
                && getsockname(listener, $0, &length) == 0 }
        }
        #expect(bound)
        let port = UInt16(bigEndian: address.sin_port)
        let shared = try RunSuite.run(sandbox, ["sh", "-c", "\(probe) connect \(port)"])
        #expect(shared == (0, "connect connected\n"), "host network: \(shared)")
        let cut = try Self.runArguments(["run", "--network", "none", sandbox, "--", "sh", "-c", "\(probe) connect \(port)"])
        #expect(cut.status == 0 && cut.output.hasPrefix("connect ") && !cut.output.contains("connected"), "--network none: \(cut)")
    }

    /// imgsandbox with `arguments`, stdout and stderr together, stdin /dev/null.
    static func runArguments(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try run([Paths.binary] + arguments, allowFailure: true)
    }

    /// argv started by a shell that first opens fds 3 to 6 on / (not close-on-exec), as a caller's leaked
    /// descriptors would be.
    static func withFDsOnRoot(_ argv: [String]) throws -> (status: Int32, output: String) {
        let quoted = argv.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        return try run(["/bin/sh", "-c", "exec 3</ 4</ 5</ 6</ && exec \(quoted) </dev/null"], allowFailure: true)
    }
}
