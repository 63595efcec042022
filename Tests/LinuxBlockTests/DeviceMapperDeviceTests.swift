import Glibc
import Testing
@testable import LinuxBlock

extension RootTests {
/// Real device-mapper (root, a kernel with dm; not the dev host, run in the VM): linear+zero origin, a
/// transient snapshot over it with a loop COW, status, list, suspend/load/resume, remove.
@Suite(.enabled(if: TestSupport.canLoop && DeviceMapper.isAvailable, "needs root, loop and device-mapper"))
struct DeviceMapperDeviceTests {
    static let mib: Int64 = 1 << 20

    @Test func originSnapshotStatusAndTeardown() throws {
        let directory = TestSupport.makeTemporaryDirectory()
        defer { TestSupport.removeTree(directory) }
        try TestSupport.makeFile("\(directory)/image", size: 8 * Self.mib)
        try TestSupport.makeFile("\(directory)/cow", size: 4 * Self.mib)
        let image = try LoopDevice.attach(file: "\(directory)/image", label: "linuxblock-test-dm-origin")
        defer { image.close() }
        let cowLoop = try LoopDevice.attach(file: "\(directory)/cow", readOnly: false, label: "linuxblock-test-dm-cow")
        defer { cowLoop.close() }

        let mapper = try DeviceMapper()
        let prefix = "linuxblock-test-\(getpid())"
        let originName = "\(prefix)-origin", cowName = "\(prefix)-cow", snapName = "\(prefix)-snap"
        defer {
            for name in [snapName, cowName, originName] { _ = try? mapper.remove(name: name) }
        }

        // Origin: the first 6 MiB of the image, then 10 MiB of zeros (a larger virtual disk).
        let origin = try mapper.create(name: originName, uuid: "\(prefix)-origin-uuid", targets: [
            .linear(start: 0, length: 12288, device: image.deviceNumber, offset: 4096),
            .zero(start: 12288, length: 20480),
        ], readOnly: true)
        #expect(try BlockDevice.deviceNumber(of: origin.path) == origin.deviceNumber)
        #expect(try BlockDevice.size(of: origin.path) == UInt64(16 * Self.mib))
        let originStatus = try mapper.status(name: originName)
        #expect(originStatus.map(\.target.line) == ["0 12288 linear \(image.deviceNumber) 4096", "12288 20480 zero"])

        // COW store: 2 MiB of the cow loop through linear, grown below by a reload.
        let cow = try mapper.create(name: cowName, uuid: "\(prefix)-cow-uuid", targets: [
            .linear(start: 0, length: 4096, device: cowLoop.deviceNumber, offset: 0),
        ], readOnly: false)
        let snap = try mapper.create(name: snapName, uuid: "\(prefix)-snap-uuid", targets: [
            .snapshot(start: 0, length: 32768, origin: origin.deviceNumber, cow: cow.deviceNumber,
                      persistent: false, chunkSectors: 16),
        ], readOnly: false)
        let listed = try mapper.list()
        #expect(Set([originName, cowName, snapName]).isSubset(of: Set(listed.map(\.name))))
        #expect(listed.first { $0.name == snapName }?.deviceNumber == snap.deviceNumber)

        let initial = try #require(try mapper.status(name: snapName).first)
        #expect(initial.target.type == "snapshot")
        #expect(initial.target.params == "\(origin.deviceNumber) \(cow.deviceNumber) N 16")
        guard case .active(let used0, let total0, _) = SnapshotStatus(statusLine: initial.status) else {
            Issue.record("unexpected snapshot status \(initial.status)")
            return
        }
        #expect(total0 == 4096)

        // Writes land in the COW store, not in the read-only origin.
        var data = [UInt8](repeating: 0xA5, count: Int(Self.mib))
        var fd = try systemCall("open", snap.path) { open(snap.path, O_RDWR | O_CLOEXEC) }
        defer { if fd >= 0 { close(fd) } }
        let written = try data.withUnsafeMutableBytes { bytes in
            try systemCall("pwrite", snap.path) { pwrite(fd, bytes.baseAddress, bytes.count, 0) }
        }
        #expect(written == data.count)
        try systemCall("fsync", snap.path) { fsync(fd) }
        guard case .active(let used1, _, _) = SnapshotStatus(statusLine: try mapper.status(name: snapName)[0].status) else {
            Issue.record("snapshot not active after a write")
            return
        }
        #expect(used1 >= used0 + 2048)

        // Grow the COW store online: suspend, load a longer table, resume; the snapshot sees the new total.
        try mapper.suspend(name: cowName)
        try mapper.load(name: cowName, targets: [.linear(start: 0, length: 8192, device: cowLoop.deviceNumber, offset: 0)])
        try mapper.resume(name: cowName)
        #expect(try BlockDevice.size(of: cow.path) == UInt64(4 * Self.mib))
        guard case .active(_, let total2, _) = SnapshotStatus(statusLine: try mapper.status(name: snapName)[0].status) else {
            Issue.record("snapshot not active after growing its COW")
            return
        }
        #expect(total2 == 8192)
        data = [UInt8](repeating: 0, count: data.count)
        let read = try data.withUnsafeMutableBytes { bytes in
            try systemCall("pread", snap.path) { pread(fd, bytes.baseAddress, bytes.count, 0) }
        }
        #expect(read == data.count)
        #expect(data.allSatisfy { $0 == 0xA5 })
        close(fd)
        fd = -1  // an open snapshot could not be removed

        // Tear down in LIFO order: nothing of ours left in the table or in /dev/mapper.
        try mapper.remove(name: snapName)
        try mapper.remove(name: cowName)
        try mapper.remove(name: originName)
        let remaining = try mapper.list().map(\.name)
        #expect(!remaining.contains { $0.hasPrefix(prefix) })
        for path in [origin.path, cow.path, snap.path] { #expect(!FileIO.exists(path)) }
    }

    @Test func createRollsBackWhenTheTableIsRejected() throws {
        let mapper = try DeviceMapper()
        let name = "linuxblock-test-\(getpid())-bad"
        defer { _ = try? mapper.remove(name: name) }
        // A target type no kernel has: DM_TABLE_LOAD fails after DM_DEV_CREATE, the created device must go.
        #expect(throws: SystemError("DM_TABLE_LOAD", "dm:\(name)", errno: EINVAL)) {
            try mapper.create(name: name, uuid: "\(name)-uuid", targets: [
                DMTarget(start: 0, length: 8, type: "linuxblock-nope", params: ""),
            ], readOnly: true)
        }
        #expect(try !mapper.list().contains { $0.name == name })
        #expect(!FileIO.exists("/dev/mapper/\(name)"))
    }
}
}
