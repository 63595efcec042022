import CLinux
import Foundation
import Glibc
import Testing
@testable import LinuxBlock

extension RootTests {
/// Copies of our mounts in another mount namespace (unshare -m, private propagation): found, detached there,
/// and nothing else touched. Needs root, unshare(1) and sh; cleans up through defers.
@Suite(.enabled(if: TestSupport.isRoot && access("/usr/bin/unshare", X_OK) == 0 && access("/bin/busybox", X_OK) == 0,
               "needs root, unshare(1) and busybox (busybox-static)"))
struct MountCopiesTests {
    /// A process in a new private mount namespace that ran `script` there (sh -c), which prints "ready" and
    /// then waits for stdin to close (`waiting`). Returns once it has printed "ready".
    final class Holder {
        let process = Process()
        let input = Pipe()

        /// Says ready, then copies stdin (nothing) to the pipe until it closes.
        static func waiting(cat: String = "cat") -> String { "echo ready && exec \(cat)" }

        init(_ script: String) throws {
            let output = Pipe()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            process.arguments = ["-m", "--propagation", "private", "sh", "-c", script]
            process.standardInput = input
            process.standardOutput = output
            try process.run()
            let line = String(decoding: output.fileHandleForReading.readData(ofLength: 6), as: UTF8.self)
            guard line == "ready\n" else {
                stop()
                throw SystemError("start holder", script, errno: EIO)
            }
        }

        var pid: Int32 { process.processIdentifier }

        func stop() {
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
        }
    }

    /// A tmpfs mounted at `directory/name` for `body`, unmounted after.
    private func withTmpfs(_ directory: String, _ name: String, _ body: (String) throws -> Void) throws {
        let path = "\(directory)/\(name)"
        try systemCall("mkdir", path) { mkdir(path, 0o755) }
        try Mount.mount(source: "mountcopies-test", target: path, type: "tmpfs", options: "size=1m")
        defer { try? Mount.unmount(path, detach: true) }
        try body(path)
    }

    @Test func aCopyInAnotherNamespaceIsFoundAndDetachedThere() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        try withTmpfs(directory, "m") { path in
            let target = try MountCopies.Target.mounted(at: path)
            // Chrooted, as `imgsandbox run` is: its own /proc/PID/mountinfo lists nothing outside its root.
            let jail = "\(directory)/jail"
            let holder = try Holder("mkdir -p \(jail)/bin && cp /bin/busybox \(jail)/bin/ && exec chroot \(jail) /bin/busybox sh -c '\(Holder.waiting(cat: "/bin/busybox cat"))'")
            defer { holder.stop() }
            // (empty, or EINVAL when the root is not a mount's root)
            #expect((try? FileIO.readText("/proc/\(holder.pid)/mountinfo"))?.contains(path) != true)
            let found = MountCopies.find([target], detach: false)
            #expect(found.map(\.pid) == [holder.pid])
            #expect(found.first?.detachError == nil)
            try MountCopies.release([target])
            #expect(MountCopies.find([target], detach: false).isEmpty)
            // Ours is untouched.
            #expect(Mount.mountPoints().contains { $0.mountPoint == path && $0.deviceNumber == target.device })
        }
    }

    @Test func aSymlinkOrAnotherFilesystemAtThePathThereIsLeftAlone() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        try systemCall("mkdir", "q") { mkdir("\(directory)/q", 0o755) }
        try withTmpfs(directory, "p") { parent in
            let path = "\(parent)/m"
            try systemCall("mkdir", path) { mkdir(path, 0o755) }
            try Mount.mount(source: "mountcopies-test", target: path, type: "tmpfs", options: "size=1m")
            defer { try? Mount.unmount(path, detach: true) }
            let target = try MountCopies.Target.mounted(at: path)
            // There: the copy moved to q, and p/m a symlink to it (on a tmpfs of its own over p).
            let holder = try Holder("mount --move \(path) \(directory)/q && mount -t tmpfs other \(parent) && ln -s \(directory)/q \(path) && \(Holder.waiting())")
            defer { holder.stop() }
            let nsFD = open("/proc/\(holder.pid)/ns/mnt", O_RDONLY | O_CLOEXEC)
            let proc = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            defer { close(nsFD); close(proc) }
            #expect(clinux_detach_in(nsFD, proc, path, target.device.rawValue) == -1 && errno == ELOOP)
            // The right path with the wrong device: not ours, not touched.
            #expect(clinux_detach_in(nsFD, proc, "\(directory)/q", target.device.rawValue + 1) == 0)
            #expect(MountCopies.find([target], detach: true).isEmpty)
            let there = MountCopies.mountsInOtherNamespaces().first { $0.pid == holder.pid }?.entries ?? []
            #expect(there.contains { $0.mountPoint == "\(directory)/q" && $0.deviceNumber == target.device })
        }
    }
}
}
