import CLinux
import Foundation
import Glibc
import TestSupport
import Testing
@testable import LinuxBlock

extension RootTests {
/// Copies of our mounts in another mount namespace (unshare -m, private propagation): seen from that
/// namespace's root, and gone with their mount point. Needs root, unshare(1) and busybox; cleans up through defers.
@Suite(.enabled(if: TestSupport.isRoot && access("/usr/bin/unshare", X_OK) == 0 && access("/bin/busybox", X_OK) == 0,
               "needs root, unshare(1) and busybox (busybox-static)"))
struct MountCopiesTests {
    /// A process in a new private mount namespace that ran `script` there (sh -c), which says ready and
    /// then waits for stdin to close (ReadyProcess.waiting).
    static func holder(_ script: String) throws -> ReadyProcess {
        try ReadyProcess(["/usr/bin/unshare", "-m", "--propagation", "private", "sh", "-c", script])
    }

    /// What the teardown relies on (Teardown+MountPoint): once unmounted here, removing the mount point
    /// detaches the copy in the other namespace too.
    @Test func aCopyInAnotherNamespaceIsSeenFromItsRootAndGoesWithTheMountPoint() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let path = "\(directory)/m"
        try systemCall("mkdir", path) { mkdir(path, 0o755) }
        try Mount.mount(source: "mountcopies-test", target: path, type: "tmpfs", options: "size=1m")
        defer { try? Mount.unmount(path, detach: true) }
        var info = stat()
        try systemCall("stat", path) { stat(path, &info) }
        let device = DeviceNumber(rawValue: UInt64(info.st_dev))
        // Chrooted, as `imgsandbox run` was: its own /proc/PID/mountinfo lists nothing outside its root.
        let jail = "\(directory)/jail"
        let holder = try Self.holder("mkdir -p \(jail)/bin && cp /bin/busybox \(jail)/bin/ && exec chroot \(jail) /bin/busybox sh -c '\(ReadyProcess.waiting(cat: "/bin/busybox cat"))'")
        defer { holder.stop() }
        #expect((try? FileIO.readText("/proc/\(holder.pid)/mountinfo"))?.contains(path) != true)
        let copies = { MountCopies.mountsInOtherNamespaces().first { $0.pid == holder.pid }?.entries.filter { $0.deviceNumber == device } ?? [] }
        #expect(copies().map(\.mountPoint) == [path])
        try Mount.unmount(path)
        #expect(copies().map(\.mountPoint) == [path], "our unmount does not reach the copy")
        try systemCall("rmdir", path) { rmdir(path) }
        #expect(copies().isEmpty)
    }
}
}
