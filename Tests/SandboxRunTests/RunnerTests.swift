import Foundation
import Glibc
import LinuxBlock
import Sandbox
import Testing
@testable import SandboxRun

@Suite struct RunnerTests {
    @Test func exitStatusIsTheShellsConvention() {
        #expect(SandboxRunner.exitStatus(0) == 0)
        #expect(SandboxRunner.exitStatus(3 << 8) == 3)
        #expect(SandboxRunner.exitStatus(SIGKILL) == 137)
        #expect(SandboxRunner.exitStatus(SIGTERM | 0x80) == 143)   // core dumped bit set
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
        defer { close(root.fd) }
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
