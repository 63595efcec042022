import Foundation
import Glibc
import LinuxBlock
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
    final class NamespaceHolder {
        let process = Process()
        private let input = Pipe()

        init(work: String, user: uid_t? = nil) throws {
            let jail = "\(work)/jail"
            if !FileManager.default.fileExists(atPath: jail + "/bin/busybox") {
                try FileManager.default.createDirectory(atPath: jail + "/bin", withIntermediateDirectories: true)
                try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: jail + "/bin/busybox")
                try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: work)
            }
            let inner = ["chroot", jail, "/bin/busybox", "sh", "-c", "echo ready && exec /bin/busybox cat"]
            process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            if let user {
                process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
                process.arguments = ["--reuid", "\(user)", "--regid", "\(user)", "--clear-groups",
                                     "unshare", "-Urm", "/bin/sh", "-c", "exec \"$@\"", "sh"] + inner
            } else {
                process.arguments = ["-m", "--propagation", "private"] + inner
            }
            let output = Pipe()
            process.standardInput = input
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let line = String(decoding: output.fileHandleForReading.readData(ofLength: 6), as: UTF8.self)
            guard line == "ready\n" else {
                stop()
                throw CommandFailed(argv: process.arguments ?? [], status: -1, output: line)
            }
        }

        func stop() {
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
        }
    }

    /// ext4 superblocks, sized zram devices and attached loop devices on the machine now.
    static func kernelObjects() -> Set<String> {
        var found = Set(FileIO.list("/sys/fs/ext4").filter { $0.hasPrefix("zram") || $0.hasPrefix("loop") }.map { "ext4 \($0)" })
        for device in FileIO.list("/sys/block") where device.hasPrefix("zram") {
            if let size = Residue.read("/sys/block/\(device)/disksize"), size != "0" { found.insert("\(device) disksize \(size)") }
        }
        for loop in LoopDevice.attached() { found.insert("loop\(loop.index) -> \(loop.backingFile)") }
        return found
    }

    @Test func aCopyOfTheHiddenMountsInAChrootedNamespaceDoesNotBreakRmdir() throws {
        let before = Self.kernelObjects()
        let fixture = try ServeFixture(images: [("disk", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("disk", "s1")
        #expect(mkdir(sandbox, 0o755) == 0)
        try FileChecks.writeFile("\(sandbox)/note", "changed")
        let holder = try NamespaceHolder(work: fixture.work)
        defer { holder.stop() }
        // Before the fix: the unmounts succeeded, the zram reset answered EBUSY and the sandbox was broken.
        #expect(rmdir(sandbox) == 0, "rmdir: \(String(cString: strerror(errno)))")
        #expect(try fixture.status().isEmpty)
        #expect(fixture.stop() == 0)
        // The copies went with it: nothing of the sandbox or its image is left while the holder lives on.
        #expect(Self.kernelObjects().subtracting(before).isEmpty, "left: \(Self.kernelObjects().subtracting(before))")
    }

    @Test(.enabled(if: NamespaceTools.usersMakeNamespaces, "unprivileged user namespaces are off here"))
    func aLockedCopyInAUserNamespaceMakesRmdirAnswerEBUSYAndKeepsTheSandboxWhole() throws {
        let fixture = try ServeFixture(images: [("disk", "whole-ext4", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("disk", "s1")
        #expect(mkdir(sandbox, 0o755) == 0)
        let holder = try NamespaceHolder(work: fixture.work, user: 65534)
        defer { holder.stop() }
        #expect(rmdir(sandbox) != 0 && errno == EBUSY)
        #expect(fixture.waitForLog { $0.contains("locked by the kernel") && $0.contains("of pid \(holder.process.processIdentifier)") })
        // Nothing was torn down: still active (before the fix: broken, every access EIO), still writable.
        #expect(try fixture.status().first?["state"] as? String == "active")
        try FileChecks.writeFile("\(sandbox)/after", "still here")
        holder.stop()
        #expect(rmdir(sandbox) == 0, "rmdir: \(String(cString: strerror(errno)))")
        #expect(fixture.stop() == 0)
    }
}
