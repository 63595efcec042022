import Foundation
import Glibc
import Testing
@testable import ImageCache
import TestSupport

/// What qemu-img can reach: a shell run exactly as it is (HelperProcess, HelperConfinement) tries the
/// host's files, the network, sysctls and capabilities (access(2) only: a regression must not write the
/// host), and reads the file it was handed as fd 3.
@Suite struct HelperConfinementTests {
    @Test func theHelperSeesOnlyWhatItIsHanded() throws {
        let fixture = try CacheFixture()
        // A host file root may read, outside anything the helper is shown.
        let secret = fixture.root + "/secret"
        try "host secret\n".write(toFile: secret, atomically: false, encoding: .utf8)
        let fd = open(fixture.plain, O_RDONLY | O_CLOEXEC)
        #expect(fd >= 0)
        defer { close(fd) }
        var info = stat()
        #expect(fstat(fd, &info) == 0)
        let job = Job(image: "probe", file: fixture.plain, format: .vm(.qcow2, nil),
                      entry: CacheEntry(directory: fixture.cacheDirectory, image: "probe", file: fixture.plain),
                      identity: CacheRecord.Identity(info), compressedSize: UInt64(info.st_size))
        let script = """
            grep -E '^(CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status
            unshare --user true 2>/dev/null && echo "made a user namespace"
            unshare --user --map-root-user true 2>/dev/null && echo "made a user namespace as its root"
            for f in \(secret) /etc/shadow /etc/passwd /home /root /sys/class/net /run; do [ -e "$f" ] && echo "sees $f"; done
            cat \(secret) 2>/dev/null && echo "read the secret"
            [ -w /proc/sys/vm/drop_caches ] && echo "writes a sysctl"
            [ -w /usr/bin ] && echo "writes /usr"
            echo "interfaces $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')"
            echo "mnt $(readlink /proc/self/ns/mnt)"
            echo "fd3 $(head -c 1048576 /proc/self/fd/3 | cksum)"
            """
        let output = String(decoding: try HelperProcess(argv: ["sh", "-c", script], file: fixture.plain)
            .run(passing: [fd], deadline: .now + .seconds(60), job: job), as: UTF8.self)
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.contains("CapEff:\t0000000000000002"), "only CAP_DAC_OVERRIDE: \(output)")
        #expect(lines.contains("CapPrm:\t0000000000000002"), "\(output)")
        #expect(lines.contains("NoNewPrivs:\t1"), "\(output)")
        // The system call filter (mode 2): a new user namespace (where it would hold every capability) is
        // refused; without the filter unshare succeeds here.
        #expect(lines.contains("Seccomp:\t2"), "a seccomp filter: \(output)")
        #expect(!lines.contains { $0.hasPrefix("made ") }, "\(output)")
        #expect(!lines.contains { $0.hasPrefix("sees ") || $0.hasPrefix("read ") || $0.hasPrefix("writes ") }, "\(output)")
        #expect(lines.contains("interfaces lo "), "no network but its own loopback: \(output)")
        let hostMount = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/mnt")) ?? ""
        #expect(lines.contains { $0.hasPrefix("mnt mnt:[") && $0 != "mnt \(hostMount)" }, "its own mount namespace: \(output)")
        let expected = Subprocess.run(["sh", "-c", "head -c 1048576 '\(fixture.plain)' | cksum"], output: .stdoutOnly).output
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(lines.contains("fd3 \(expected)"), "reads the file it is handed: \(output)")
    }
}
