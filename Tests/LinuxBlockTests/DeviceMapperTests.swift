import CLinux
import Glibc
import Testing
@testable import LinuxBlock

/// Device-mapper without a kernel: table rendering, the DM_TABLE_LOAD payload, and the answer walkers run
/// on answers built like the kernel builds them. (This machine has no device-mapper; the VM test covers ioctls.)
@Suite struct DMTargetTests {
    static let loop = DeviceNumber(major: 7, minor: 3)
    static let zram = DeviceNumber(major: 252, minor: 1)

    @Test(arguments: [
        (DMTarget.linear(start: 0, length: 524_288, device: loop, offset: 81_920), "0 524288 linear 7:3 81920"),
        (DMTarget.zero(start: 524_288, length: 1_048_576), "524288 1048576 zero"),
        (DMTarget.snapshot(start: 0, length: 1_572_864, origin: DeviceNumber(major: 253, minor: 0), cow: zram,
                           persistent: false, chunkSectors: 16), "0 1572864 snapshot 253:0 252:1 N 16"),
        (DMTarget.snapshot(start: 0, length: 8, origin: loop, cow: zram, persistent: true, chunkSectors: 8),
         "0 8 snapshot 7:3 252:1 P 8"),
    ])
    func rendersTableLines(target: DMTarget, line: String) {
        #expect(target.line == line)
    }

    @Test func payloadAlignsEachSpecAndRoundTripsThroughTheStatusWalker() throws {
        let targets = [DMTarget.linear(start: 0, length: 100, device: Self.loop, offset: 2048),
                       DMTarget.zero(start: 100, length: 28)]
        let payload = try DeviceMapper.tablePayload(targets, object: "dm:test")
        #expect(payload.count % 8 == 0)
        // For two targets the load encoding of spec.next (from this spec) equals the status encoding (from
        // the first spec), so the payload doubles as a DM_TABLE_STATUS answer.
        let parsed = try withAnswer(payload: payload, targetCount: 2) { buffer, size throws(SystemError) in
            try DeviceMapper.parseTargets(buffer, size, object: "dm:test")
        }
        #expect(parsed == targets)
    }

    @Test func rejectsATypeTooLongForTheKernelField() {
        let target = DMTarget(start: 0, length: 8, type: "a-type-name-of-16", params: "")
        #expect(throws: SystemError("DM_TABLE_LOAD", "dm:x", errno: EINVAL)) {
            try DeviceMapper.tablePayload([target], object: "dm:x")
        }
    }

    @Test func statusWalkerRejectsACursorPastTheAnswer() throws {
        var payload = try DeviceMapper.tablePayload([.zero(start: 0, length: 8)], object: "dm:t")
        // Claim a second target the answer does not hold: the walker must stop with an error, not read beyond.
        payload.append(contentsOf: [UInt8](repeating: 0, count: 8))
        #expect(throws: SystemError("DM_TABLE_STATUS", "dm:t", errno: EPROTO)) {
            try withAnswer(payload: payload, targetCount: 2, answerSize: Int(clinux_DM_IOCTL_SIZE) + payload.count) {
                buffer, size throws(SystemError) in try DeviceMapper.parseTargets(buffer, size, object: "dm:t")
            }
        }
    }

    @Test func listWalkerReadsNamesAndNumbers() throws {
        // struct dm_name_list { __u64 dev; __u32 next; char name[]; } — next counts from this entry.
        let first = DeviceNumber(major: 253, minor: 0)
        let second = DeviceNumber(major: 253, minor: 7)
        var payload = nameListEntry(dev: first.rawValue, next: 32, name: "isb-a")
        payload += nameListEntry(dev: second.rawValue, next: 0, name: "isb-bb")
        let devices = try withAnswer(payload: payload, targetCount: 0) { buffer, size throws(SystemError) in
            try DeviceMapper.parseDeviceList(buffer, size, object: "control")
        }
        #expect(devices.map(\.name) == ["isb-a", "isb-bb"])
        #expect(devices.map(\.deviceNumber) == [first, second])
    }

    @Test func listWalkerReadsTheEmptyMarker() throws {
        let payload = nameListEntry(dev: 0, next: 0, name: "")
        let devices = try withAnswer(payload: payload, targetCount: 0) { buffer, size throws(SystemError) in
            try DeviceMapper.parseDeviceList(buffer, size, object: "control")
        }
        #expect(devices.isEmpty)
    }

    @Test func listWalkerRejectsAnUnterminatedName() {
        var payload = nameListEntry(dev: 5, next: 0, name: "")
        payload.removeLast(payload.count - 12)
        payload += Array("abcdefgh".utf8)
        #expect(throws: SystemError("DM_LIST_DEVICES", "control", errno: EPROTO)) {
            try withAnswer(payload: payload, targetCount: 0, answerSize: Int(clinux_DM_IOCTL_SIZE) + payload.count) {
                buffer, size throws(SystemError) in try DeviceMapper.parseDeviceList(buffer, size, object: "control")
            }
        }
    }

    @Test func headerRejectsNamesLongerThanTheKernelField() {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        let name = String(repeating: "n", count: 128)
        #expect(clinux_dm_init(buffer, 4096, name, nil, 0, 0, nil, 0) == -1)
        #expect(errno == ENAMETOOLONG)
        #expect(clinux_dm_init(buffer, 4096, String(name.dropFirst()), nil, 0, 0, nil, 0) == 0)
    }

    /// A dm_ioctl answer holding `payload` after the header; data_size says how much of it is valid.
    private func withAnswer<R>(
        payload: [UInt8], targetCount: UInt32, answerSize: Int? = nil,
        _ body: (UnsafeRawPointer, Int) throws(SystemError) -> R
    ) throws(SystemError) -> R {
        let size = answerSize ?? 16 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        let rc = payload.withUnsafeBytes {
            clinux_dm_init(buffer, size, "test", nil, 0, targetCount, $0.baseAddress, $0.count)
        }
        guard rc == 0 else { throw SystemError("clinux_dm_init", "test", errno: errno) }
        return try body(UnsafeRawPointer(buffer), size)
    }

    private func nameListEntry(dev: UInt64, next: UInt32, name: String) -> [UInt8] {
        var bytes = withUnsafeBytes(of: dev.littleEndian) { Array($0) }
        bytes += withUnsafeBytes(of: next.littleEndian) { Array($0) }
        bytes += Array(name.utf8) + [0]
        // Pad up to where `next` points (or to 8 bytes for the last entry), as the kernel aligns entries.
        let end = next > 0 ? Int(next) : (bytes.count + 7) / 8 * 8
        return bytes + [UInt8](repeating: 0, count: max(0, end - bytes.count))
    }
}
