import CLinux
import Glibc
import Testing
@testable import LinuxBlock

/// Real loop devices (root). Every test detaches what it attached, even when it fails.
extension RootTests {
@Suite(.enabled(if: TestSupport.canLoop, "needs root and /dev/loop-control"))
struct LoopDeviceTests {
    static let mib: Int64 = 1 << 20

    /// Defect: detach/setCapacity read the fd under the mutex and used it after unlocking, so a concurrent
    /// close() could free the number (and another open reuse it) under the ioctl. Now the ioctl holds it.
    @Test func closeDuringAnIoctlWaitsForIt() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let file = "\(directory)/disk.img"
        try TestSupport.makeFile(file, size: Self.mib)
        let loop = try LoopDevice.attach(file: file, readOnly: true, autoclear: true, label: "linuxblock-test-lease-\(getpid())")
        defer { loop.close() }
        try loop.withDescriptor("test") { fd in
            loop.close()
            #expect(fcntl(fd, F_GETFD) != -1, "the fd in use stays open after a concurrent close()")
            #expect(clinux_ioctl_none(fd, clinux_LOOP_SET_CAPACITY) == 0)
        }
        #expect(throws: SystemError("LOOP_SET_CAPACITY", loop.path, errno: EBADF)) { try loop.setCapacity() }
        #expect(throws: SystemError("LOOP_CLR_FD", loop.path, errno: EBADF)) { try loop.detach() }
    }

    @Test func readOnlyWithOffsetAndSizeLimit() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let file = "\(directory)/disk.img"
        try TestSupport.makeFile(file, size: 4 * Self.mib)

        let label = "linuxblock-test-ro-\(getpid())"
        let loop = try LoopDevice.attach(file: file, offset: UInt64(Self.mib), sizeLimit: UInt64(2 * Self.mib),
                                         readOnly: true, autoclear: true, label: label)
        defer { loop.close() }

        #expect(try BlockDevice.size(of: loop.path) == UInt64(2 * Self.mib))
        #expect(try BlockDevice.logicalBlockSize(of: loop.path) == 512)
        #expect(try BlockDevice.deviceNumber(of: loop.path) == loop.deviceNumber)
        #expect(try FileIO.readValue("/sys/block/loop\(loop.index)/ro") == "1")

        let entry = try #require(LoopDevice.attached().first { $0.index == loop.index })
        #expect(entry.backingFile == file)
        #expect(entry.label == label)

        // Read-only is enforced by the kernel: opening for write or writing fails.
        let fd = open(loop.path, O_WRONLY | O_CLOEXEC)
        if fd >= 0 {
            defer { close(fd) }
            var byte: UInt8 = 1
            #expect(write(fd, &byte, 1) == -1)
            #expect([EPERM, EROFS].contains(errno))
        } else {
            #expect([EPERM, EROFS, EACCES].contains(errno))
        }
    }

    @Test func autoclearDetachesWhenTheLastOpenerCloses() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let file = "\(directory)/disk.img"
        try TestSupport.makeFile(file, size: Self.mib)

        let loop = try LoopDevice.attach(file: file, label: "linuxblock-test-autoclear")
        defer { loop.close() }
        #expect(TestSupport.attachedBackingFiles().contains(file))
        TestSupport.settleUdev()
        loop.close()
        loop.close()  // idempotent
        #expect(!TestSupport.attachedBackingFiles().contains(file))
    }

    @Test func detachWithoutAutoclear() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let file = "\(directory)/disk.img"
        try TestSupport.makeFile(file, size: Self.mib)

        let loop = try LoopDevice.attach(file: file, readOnly: false, autoclear: false, label: "linuxblock-test-rw")
        defer { try? loop.detach() }
        #expect(try FileIO.readValue("/sys/block/loop\(loop.index)/ro") == "0")
        #expect(try FileIO.readValue("/sys/block/loop\(loop.index)/loop/autoclear") == "0")
        TestSupport.settleUdev()
        try loop.detach()
        #expect(!TestSupport.attachedBackingFiles().contains(file))
        #expect(throws: SystemError("LOOP_CLR_FD", loop.path, errno: EBADF)) { try loop.detach() }
    }

    @Test func refusesASymlinkedBackingFile() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let file = "\(directory)/disk.img"
        try TestSupport.makeFile(file, size: Self.mib)
        try systemCall("symlink", file) { symlink(file, "\(directory)/link.img") }
        #expect(throws: SystemError("open", "\(directory)/link.img", errno: ELOOP)) {
            try LoopDevice.attach(file: "\(directory)/link.img", label: "linuxblock-test-symlink")
        }
        #expect(!TestSupport.attachedBackingFiles().contains(file))
    }

    @Test func concurrentAttachesGetDistinctDevices() async throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        let files = (0..<4).map { "\(directory)/disk\($0).img" }
        for file in files { try TestSupport.makeFile(file, size: Self.mib) }

        let loops = try await withThrowingTaskGroup(of: LoopDevice.self) { group in
            for file in files {
                group.addTask { try LoopDevice.attach(file: file, label: "linuxblock-test-race") }
            }
            var result: [LoopDevice] = []
            for try await loop in group { result.append(loop) }
            return result
        }
        defer { loops.forEach { $0.close() } }
        #expect(Set(loops.map(\.index)).count == files.count)
        let attached = Dictionary(LoopDevice.attached(readingLabels: false).map { ($0.index, $0.backingFile) }) { a, _ in a }
        #expect(Set(loops.compactMap { attached[$0.index] }) == Set(files))
    }
}
}
