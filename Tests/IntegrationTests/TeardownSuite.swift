import CLinux
import Foundation
import Glibc
import LinuxBlock
import Sandbox
import TestSupport
import Testing

/// What held the COW store and the image's lower after every mount of them was gone (issue 23): a mount
/// namespace made while a sandbox exists (unshare -m, `imgsandbox run`, a container, any local user's user
/// namespace) copies the hidden mounts, and with private propagation our unmounts never reach the copy.
/// Whether the tests can make mount namespaces of their own (unshare(1)) with a chroot in them (busybox-static).
enum NamespaceTools {
    static let canHold = access("/usr/bin/unshare", X_OK) == 0 && access("/bin/busybox", X_OK) == 0
    /// Whether an unprivileged user may make a user namespace here (a sysctl may forbid it).
    static let usersMakeNamespaces = canHold && Environment.canServe
        && (try? run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "unshare", "-Urm", "true"],
                     allowFailure: true).status) == 0
}

@Suite(.serialized, .enabled(if: Environment.canServe && NamespaceTools.canHold, Environment.skipReason))
struct TeardownSuite {
    /// A process in a mount namespace of its own made now (a copy of ours), chrooted into a folder holding
    /// only busybox, as `imgsandbox run` is chrooted: its /proc/PID/mountinfo shows none of the copies.
    /// `user`: made by that unprivileged uid in a user namespace of its own (the kernel locks the copies).
    static func namespaceHolder(work: String, user: uid_t? = nil) throws -> ReadyProcess {
        let jail = "\(work)/jail"
        if !FileManager.default.fileExists(atPath: jail + "/bin/busybox") {
            try FileManager.default.createDirectory(atPath: jail + "/bin", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: jail + "/bin/busybox")
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: work)
        }
        let inner = ["chroot", jail, "/bin/busybox", "sh", "-c", ReadyProcess.waiting(cat: "/bin/busybox cat")]
        guard let user else { return try ReadyProcess(["/usr/bin/unshare", "-m", "--propagation", "private"] + inner) }
        return try ReadyProcess(["/usr/bin/setpriv", "--reuid", "\(user)", "--regid", "\(user)", "--clear-groups",
                                 "unshare", "-Urm", "/bin/sh", "-c", "exec \"$@\"", "sh"] + inner)
    }

    /// ext4 superblocks (/sys/fs/ext4: zramN, loopN, dm-N), sized zram devices, attached loop devices and
    /// imgsandbox's dm devices on the machine now. Tests compare it with what was there before they started
    /// (under the machine-wide test lock, what is new is theirs).
    static func kernelObjects() -> Set<String> {
        Residue.settleUdev()
        var found = Set(FileIO.list("/sys/fs/ext4").filter { $0 != "features" }.map { "ext4 \($0)" })
        for device in FileIO.list("/sys/block") where device.hasPrefix("zram") {
            if let size = Residue.read("/sys/block/\(device)/disksize"), size != "0" { found.insert("\(device) disksize \(size)") }
        }
        for loop in LoopDevice.attached() { found.insert("loop\(loop.index) -> \(loop.backingFile)") }
        for name in Residue.dmDevices(of: nil) { found.insert("dm \(name)") }
        return found
    }

    /// That `objects` (new since a test began, its sandboxes alive) hold what the after-check looks for on this
    /// engine: a filesystem's superblock, a sized zram device and a loop device. Else that check sees nothing.
    static func expectSandboxObjects(_ objects: Set<String>) {
        #expect(objects.contains { $0.hasPrefix("ext4 ") } && objects.contains { $0.contains(" disksize ") }
                && objects.contains { $0.hasPrefix("loop") }, "a live sandbox's kernel objects not seen: \(objects)")
    }

    @Test func aCopyOfTheHiddenMountsInAChrootedNamespaceDoesNotBreakRmdir() throws {
        let before = Self.kernelObjects()
        let fixture = try ServeFixture(images: [("disk", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("disk", "s1")
        #expect(mkdir(sandbox, 0o755) == 0)
        try FileChecks.writeFile("\(sandbox)/note", "changed")
        Self.expectSandboxObjects(Self.kernelObjects().subtracting(before))
        let holder = try Self.namespaceHolder(work: fixture.work)
        defer { holder.stop() }
        // Before the fix: the unmounts succeeded, the zram reset answered EBUSY and the sandbox was broken.
        #expect(rmdir(sandbox) == 0, "rmdir: \(String(cString: strerror(errno)))")
        #expect(try fixture.status().isEmpty)
        #expect(fixture.stop() == 0)
        // The copies went with it: nothing of the sandbox or its image is left while the holder lives on.
        #expect(Self.kernelObjects().subtracting(before).isEmpty, "left: \(Self.kernelObjects().subtracting(before))")
    }

    /// An unprivileged user's `unshare -Urm` copy is locked by the kernel (umount there: EINVAL, even for
    /// root), but removing the mount point detaches it all the same: rmdir succeeds and nothing is left while
    /// the holder lives on. Before: rmdir answered EBUSY for as long as the holder lived (and before that,
    /// the sandbox was broken, every access EIO).
    @Test(.enabled(if: NamespaceTools.usersMakeNamespaces, "unprivileged user namespaces are off here"))
    func aLockedCopyInAUserNamespaceHoldsNeitherRmdirNorTheDevices() throws {
        let before = Self.kernelObjects()
        let fixture = try ServeFixture(images: [("disk", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("disk", "s1")
        #expect(mkdir(sandbox, 0o755) == 0)
        try FileChecks.writeFile("\(sandbox)/note", "changed")
        let holder = try Self.namespaceHolder(work: fixture.work, user: 65534)
        defer { holder.stop() }
        #expect(rmdir(sandbox) == 0, "rmdir: \(String(cString: strerror(errno)))")
        #expect(try fixture.status().isEmpty)
        #expect(fixture.stop() == 0)
        #expect(Self.kernelObjects().subtracting(before).isEmpty, "left: \(Self.kernelObjects().subtracting(before))")
    }

    /// diff and save on the dm engine mount the image's root read-only (made at the first, kept until the
    /// image is released): a namespace made meanwhile holds a copy of it, which must not keep its loop device
    /// (the mount point's removal detaches it, as for save's output below).
    @Test func aNamespaceMadeAfterADiffDoesNotKeepTheImagesRootMounted() throws {
        let before = Self.kernelObjects()
        let fixture = try ServeFixture(images: [("disk", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("disk", "s1")
        #expect(mkdir(sandbox, 0o755) == 0)
        try FileChecks.writeFile("\(sandbox)/note", "changed")
        let diff = try run([Paths.binary, "diff", sandbox], allowFailure: true)
        #expect(diff.status == 0 && diff.output.contains("/note"), "\(diff.output)")
        let holder = try Self.namespaceHolder(work: fixture.work)
        defer { holder.stop() }
        #expect(rmdir(sandbox) == 0, "rmdir: \(String(cString: strerror(errno)))")
        // The image is released when the daemon stops: its unmounts succeed, a copy would keep the loop device.
        #expect(fixture.stop() == 0)
        #expect(Self.kernelObjects().subtracting(before).isEmpty, "left: \(Self.kernelObjects().subtracting(before))")
    }

    /// save mounts its output (a loop device on OUT.partial, read-write) while it writes the changes, and a
    /// namespace made then holds a copy of that mount; left there, the copy would keep the loop device and its
    /// filesystem after the save, and its last unmount would write into OUT after save checked and renamed it.
    /// The kernel detaches every copy (a user namespace's locked one too) when save removes the mount point
    /// right after its unmount (rmdir: detach_mounts), before the loop device goes: this keeps it so.
    /// `user`: the namespace is an unprivileged user's (`unshare -Urm`).
    @Test(arguments: NamespaceTools.usersMakeNamespaces ? [nil, 65534] : [nil])
    func aNamespaceMadeDuringSaveDoesNotKeepTheOutputMounted(user: uid_t?) throws {
        let fixture = try ServeFixture(images: [("disk", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let daemon = try #require(fixture.pid)
        let names = InstanceNames(pid: daemon)
        let sandbox = fixture.sandbox("disk", "s1")
        #expect(mkdir(sandbox, 0o755) == 0)
        try FileChecks.writeFile("\(sandbox)/payload", "written into the output while a namespace is made")
        // The dm engine mounts the image's root at the first diff or save and keeps it while the image is in use.
        #expect(try run([Paths.binary, "diff", sandbox]).output.contains("/payload"))
        let withSandbox = Self.kernelObjects()
        // save reads the changed file after it mounted the output: that open waits for the test's answer.
        let gate = try OpenGate(file: names.hiddenMount(image: "disk", sandbox: "s1") + "/payload")
        defer { gate.close() }
        let output = fixture.work + "/out.img"
        let save = Process()
        save.executableURL = URL(fileURLWithPath: Paths.binary)
        save.arguments = ["save", "--quiet", sandbox, output]
        save.standardOutput = FileHandle.nullDevice
        try save.run()
        var holder: ReadyProcess?
        defer { holder?.stop() }
        gate.answerOpens(while: { save.isRunning }) {
            guard holder == nil, Mount.mountPoints().contains(where: { $0.mountPoint.hasPrefix(names.runDirectory + "/save-") }) else { return }
            holder = try? Self.namespaceHolder(work: fixture.work, user: user)
        }
        save.waitUntilExit()
        #expect(save.terminationStatus == 0)
        try #require(holder != nil, "save's output mount was never seen while it read the changes")
        // Before the fix: the output's loop device stayed attached, its ext4 superblock alive.
        #expect(Self.kernelObjects().subtracting(withSandbox).isEmpty, "left: \(Self.kernelObjects().subtracting(withSandbox))")
        let saved = try fixture.fingerprint(output)
        holder?.stop()
        holder = nil
        #expect(try fixture.fingerprint(output) == saved, "the output changed after save returned")
        #expect(try run(["e2fsck", "-f", "-n", output], allowFailure: true).status == 0)
        #expect(rmdir(sandbox) == 0, "rmdir: \(String(cString: strerror(errno)))")
        #expect(fixture.stop() == 0)
    }
}

/// Holds every open of one file (fanotify FAN_OPEN_PERM) until the test has acted and allows it.
final class OpenGate {
    private let fd: Int32

    init(file: String) throws {
        fd = fanotify_init(UInt32(FAN_CLASS_CONTENT | FAN_CLOEXEC), UInt32(O_RDONLY | O_CLOEXEC))
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        guard fanotify_mark(fd, UInt32(FAN_MARK_ADD), UInt64(FAN_OPEN_PERM), AT_FDCWD, file) == 0 else {
            let saved = errno
            Glibc.close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: saved) ?? .EIO)
        }
    }

    /// Runs `act` at each open, then lets the open go on, for as long as `running` holds (bounded: 5 min).
    func answerOpens(while running: () -> Bool, _ act: () -> Void) {
        let deadline = Date(timeIntervalSinceNow: 300)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while running(), Date() < deadline {
            // Polled with a timeout only to notice `running` turning false; events wake it at once.
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 100) > 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else { continue }
            var offset = 0
            while offset + MemoryLayout<fanotify_event_metadata>.size <= count {
                let event = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: fanotify_event_metadata.self) }
                guard event.event_len >= MemoryLayout<fanotify_event_metadata>.size else { break }
                if event.fd >= 0 {
                    act()
                    var answer = fanotify_response(fd: event.fd, response: UInt32(FAN_ALLOW))
                    _ = write(fd, &answer, MemoryLayout<fanotify_response>.size)
                    Glibc.close(event.fd)
                }
                offset += Int(event.event_len)
            }
        }
    }

    func close() { Glibc.close(fd) }
}
