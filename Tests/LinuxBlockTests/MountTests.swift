import Glibc
import Testing
@testable import LinuxBlock

extension RootTests {
/// mkfs.ext4 on a temp file, loop, mount, online grow, unmount (root). Cleans up through defers.
@Suite(.enabled(if: TestSupport.canLoop && access("/sbin/mkfs.ext4", X_OK) == 0, "needs root, loop and mkfs.ext4"))
struct MountTests {
    static let mib: Int64 = 1 << 20

    /// A 32 MiB ext4 in a 64 MiB file (room behind it to grow into), loop-attached writable and mounted;
    /// `body` runs with the mount point, then everything is unmounted and detached, also on failure.
    private func withMountedExt4(_ body: (_ target: String, _ loop: LoopDevice) throws -> Void) throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let file = "\(directory)/disk.img"
        let target = "\(directory)/mnt"
        try systemCall("mkdir", target) { mkdir(target, 0o755) }
        try TestSupport.makeFile(file, size: 64 * Self.mib)
        _ = try Command.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "lbtest", file, "32M"])

        let loop = try LoopDevice.attach(file: file, readOnly: false, label: "linuxblock-test-mount")
        defer { loop.close() }
        try Mount.mount(source: loop.path, target: target, type: "ext4", flags: [.nosuid, .nodev])
        var mounted = true
        defer { if mounted { _ = try? Mount.unmount(target, detach: true) } }

        try body(target, loop)

        try Mount.unmount(target)
        mounted = false
        #expect(!Mount.mountPoints().contains { $0.mountPoint == target })
        TestSupport.settleUdev()
        loop.close()
        #expect(!TestSupport.attachedBackingFiles().contains(file))
    }

    @Test func mountAndUnmountAnExt4ThroughALoopDevice() throws {
        try withMountedExt4 { target, loop in
            let entry = try #require(Mount.mountPoints().first { $0.mountPoint == target })
            #expect(entry.type == "ext4")
            #expect(entry.source == loop.path)
            #expect(entry.deviceNumber == loop.deviceNumber)
            #expect(entry.options.split(separator: ",").contains("nosuid"))
            #expect(entry.options.split(separator: ",").contains("nodev"))

            let usage = try FilesystemUsage.of(target)
            #expect(usage.blockSize == 4096)
            #expect(usage.totalBytes <= UInt64(32 * Self.mib))
            #expect(usage.totalBytes > UInt64(16 * Self.mib))
            try TestSupport.writeText("\(target)/hello", "hello\n")
            #expect(try TestSupport.readText("\(target)/hello") == "hello\n")
        }
    }

    /// The ioctls save uses instead of fsfreeze, fstrim and `sync --file-system`: a second freeze is the
    /// kernel's EBUSY and a thaw of a thawed filesystem its EINVAL (so both calls really reached it), and
    /// a trim after a file's deletion discards at least that file's blocks.
    @Test func freezeThawTrimAndSyncAreTheKernelCalls() throws {
        try withMountedExt4 { target, _ in
            try TestSupport.makeFile("\(target)/filler", size: 0)
            let fd = try systemCall("open", target) { open("\(target)/filler", O_WRONLY | O_CLOEXEC) }
            let chunk = [UInt8](repeating: 0xA5, count: 1 << 20)
            for _ in 0..<8 { _ = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
            close(fd)
            try FilesystemControl.sync(target)
            unlink("\(target)/filler")
            try FilesystemControl.sync(target)
            #expect(try FilesystemControl.trim(target) >= UInt64(8 * Self.mib))

            try FilesystemControl.freeze(target)
            #expect(throws: SystemError("FIFREEZE", target, errno: EBUSY)) { try FilesystemControl.freeze(target) }
            try FilesystemControl.thaw(target)
            #expect(throws: SystemError("FITHAW", target, errno: EINVAL)) { try FilesystemControl.thaw(target) }
            try TestSupport.writeText("\(target)/after", "thawed\n")
            #expect(throws: SystemError("open", "\(target)/missing", errno: ENOENT)) { try FilesystemControl.sync("\(target)/missing") }
        }
    }

    @Test(.enabled(if: Ext4.canGrowOnline, "needs CAP_SYS_RESOURCE (absent for root on the dev host; runs in the VM)"))
    func growOnlineIntoTheRoomBehind() throws {
        try withMountedExt4 { target, _ in
            try TestSupport.writeText("\(target)/hello", "hello\n")
            let before = try FilesystemUsage.of(target)
            try Ext4.growOnline(mountPath: target, toBlocks: UInt64(64 * Self.mib / 4096))
            let after = try FilesystemUsage.of(target)
            #expect(after.totalBytes > before.totalBytes + UInt64(24 * Self.mib))
            #expect(try TestSupport.readText("\(target)/hello") == "hello\n")
            // Beyond the end of the device: the kernel refuses.
            #expect(throws: SystemError.self) {
                try Ext4.growOnline(mountPath: target, toBlocks: UInt64(128 * Self.mib / 4096))
            }
        }
    }

    @Test(.enabled(if: !Ext4.canGrowOnline, "only where CAP_SYS_RESOURCE is missing"))
    func growOnlineWithoutTheCapabilityIsANamedEPERM() throws {
        try withMountedExt4 { target, _ in
            #expect(throws: SystemError("EXT4_IOC_RESIZE_FS", target, errno: EPERM)) {
                try Ext4.growOnline(mountPath: target, toBlocks: UInt64(64 * Self.mib / 4096))
            }
        }
    }

    @Test func unmountDoesNotFollowASymlink() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let target = "\(directory)/mnt"
        try systemCall("mkdir", target) { mkdir(target, 0o755) }
        try Mount.mount(source: "tmpfs", target: target, type: "tmpfs", options: "size=1m")
        defer { _ = try? Mount.unmount(target, detach: true) }
        try systemCall("symlink", target) { symlink(target, "\(directory)/link") }
        #expect(throws: SystemError.self) { try Mount.unmount("\(directory)/link") }
        #expect(Mount.mountPoints().contains { $0.mountPoint == target })
        try Mount.unmount(target)
        #expect(!Mount.mountPoints().contains { $0.mountPoint == target })
    }

    @Test func mountErrorsNameTheTarget() {
        #expect(throws: SystemError("mount", "/nonexistent/linuxblock", errno: ENOENT)) {
            try Mount.mount(source: "tmpfs", target: "/nonexistent/linuxblock", type: "tmpfs")
        }
    }
}
}
