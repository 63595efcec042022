import Foundation
import Glibc
import LinuxBlock
import Sandbox
import SyscallFilter
import Testing
@testable import SandboxRun

@Suite struct RunnerTests {
    @Test func exitStatusIsTheShellsConvention() {
        #expect(SandboxRunner.exitStatus(0) == 0)
        #expect(SandboxRunner.exitStatus(3 << 8) == 3)
        #expect(SandboxRunner.exitStatus(SIGKILL) == 137)
        #expect(SandboxRunner.exitStatus(SIGTERM | 0x80) == 143)   // core dumped bit set
    }

    @Test func messagesAreOneEscapedLine() {
        #expect(RunError("cannot execute a\u{1b}[2Jb\nc\\d: No such file").line == "imgsandbox run: cannot execute a\\x1b[2Jb\\x0ac\\x5cd: No such file\n")
    }

    /// The policy the contract of issue 22 names: what the bounding set lacks, what the filter refuses.
    @Test func policyDropsAndRefusesWhatTheContractNames() throws {
        let kept = Set(ConfinementPolicy.keptCapabilities.map(\.name))
        for name in ["SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_BOOT", "SYS_TIME", "SYSLOG", "MKNOD", "NET_ADMIN",
                     "SYS_PTRACE", "MAC_ADMIN", "BPF", "PERFMON", "DAC_READ_SEARCH"] {
            #expect(!kept.contains("CAP_" + name))
        }
        for name in ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL", "SETFCAP"] {
            #expect(kept.contains("CAP_" + name))
        }
        let denied = Set(SyscallFilter.denied)
        for name in ["kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "open_by_handle_at",
                     "swapon", "swapoff", "reboot", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
                     "mount", "umount2", "pivot_root", "fsopen", "fsmount", "move_mount", "open_tree"] {
            #expect(denied.contains(name))
        }
        let program = try SyscallFilter.program()
        var info = stat()
        #expect(fstat(program.raw, &info) == 0 && info.st_size > 0 && info.st_size % 8 == 0, "a BPF program is 8-byte instructions")
    }

    @Test func resolvConfLinksIntoRunAreFollowedOnlyThere() {
        #expect(SandboxRoot.underRun("/etc/../run/systemd/resolve/stub-resolv.conf") == "/run/systemd/resolve/stub-resolv.conf")
        #expect(SandboxRoot.underRun("/run/resolvconf/resolv.conf") == "/run/resolvconf/resolv.conf")
        #expect(SandboxRoot.underRun("/etc/secret") == nil)
        #expect(SandboxRoot.underRun("/run/../etc/shadow") == nil)
        #expect(SandboxRoot.underRun("/run") == nil)
        #expect(SandboxRoot.underRun("/run/imgsandbox-run/policy-rc.d") == nil)
    }

    @Test func hostnames() {
        #expect(SandboxRunner.validHostname("raspberrypi"))
        #expect(SandboxRunner.validHostname("a-b.c9"))
        #expect(!SandboxRunner.validHostname(""))
        #expect(!SandboxRunner.validHostname("has space"))
        #expect(!SandboxRunner.validHostname("t_1"))
        #expect(!SandboxRunner.validHostname(String(repeating: "a", count: 65)))
    }

    @Test func defaultCommandIsRootsLoginShell() throws {
        let image = try Scratch()
        try image.write("etc/passwd", "daemon:x:1:1::/:/bin/false\nroot:x:0:0:root:/root:/bin/bash\n")
        let root = try image.root()
        #expect(SandboxRunner.command([], root: root) == ("/bin/sh", ["/bin/sh", "-l"]))   // no /bin/bash in the image
        try image.write("bin/bash", "x")
        #expect(SandboxRunner.command([], root: root) == ("/bin/bash", ["/bin/bash", "-l"]))
        #expect(SandboxRunner.command(["ls", "-l"], root: root) == ("ls", ["ls", "-l"]))
    }

    func mount(_ point: String) -> MountEntry {
        MountEntry(mountPoint: point, source: "imgsandbox-1", type: InstanceNames.fuseType, options: "rw", deviceNumber: DeviceNumber(major: 0, minor: 99))
    }

    @Test func onlyALiveSandboxDirectoryIsAccepted() throws {
        let scratch = try Scratch()
        try FileManager.default.createDirectory(atPath: scratch.path + "/mnt/img/sandboxes/t1/etc", withIntermediateDirectories: true)
        let mounts = [mount(scratch.path + "/mnt")]
        let location = try SandboxLocation(scratch.path + "/mnt/img/sandboxes/t1/", mounts: mounts)
        #expect(location.name == "t1")
        for (path, words) in [("/mnt/img", "expected"), ("/mnt/img/sandboxes", "expected"), ("/mnt/img/sandboxes/t1/etc", "expected"),
                              ("/mnt/img/sandboxes/none", "No such file")] {
            #expect {
                try SandboxLocation(scratch.path + path, mounts: mounts)
            } throws: { ($0 as? RunError)?.description.contains(words) ?? false }
        }
        #expect {
            try SandboxLocation(scratch.path + "/mnt/img/sandboxes/t1", mounts: [])
        } throws: { ($0 as? RunError)?.description.contains("is serve running") ?? false }
    }
}

@Suite struct StatusPipeTests {
    /// bwrap 0.8's --json-status-fd lines.
    @Test func readsChildPidAndExitCode() {
        #expect(StatusPipe.number("child-pid", in: #"{ "child-pid": 4242, "cgroup-namespace": 4026531835 }"#) == 4242)
        #expect(StatusPipe.number("exit-code", in: #"{ "exit-code": 3 }"#) == 3)
        #expect(StatusPipe.number("exit-code", in: #"{ "child-pid": 12 }"#) == nil)
    }
}
