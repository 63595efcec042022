import Glibc
import LinuxBlock
import Synchronization

/// A dm sandbox's COW store: one zram device of --cow-size, or, when --cow-max allows more, a dm `linear`
/// device over one or more zram devices that `grow` extends online. A transient snapshot reads its COW
/// device's size at each new exception, so a reloaded, larger linear table is used at once.
///
/// zram has 4 KiB logical blocks, and a dm snapshot takes the largest of its origin's and COW's: a
/// filesystem doing smaller I/O (ext4 with 1 KiB blocks, xfs with 512-byte sectors) cannot run on it. For
/// those the store puts a loop device (512-byte sectors, buffered: sub-page writes go through the page
/// cache of the device below, so the data still lands in zram) on top, and the snapshot uses that.
final class CowStore: Sendable {
    struct State {
        /// zram ids and their sizes in bytes, in table order.
        var segments: [(id: Int, bytes: UInt64)] = []
        /// Set by teardown: no growth after that.
        var closed = false
        /// The 512-byte-sector loop device over the zram or linear device, when the snapshot needs one.
        var smallSectorLoop: LoopDevice?
        var totalBytes: UInt64 { segments.reduce(0) { $0 + $1.bytes } }
    }

    /// nil when the snapshot sits on the single zram device directly.
    let linearName: String?
    let stepBytes: UInt64
    let maxBytes: UInt64
    private let allocator: ZramAllocator
    private let deviceMapper: DeviceMapper
    private let state = Mutex(State())

    private init(linearName: String?, stepBytes: UInt64, maxBytes: UInt64, allocator: ZramAllocator,
                 deviceMapper: DeviceMapper) {
        self.linearName = linearName
        self.stepBytes = stepBytes
        self.maxBytes = maxBytes
        self.allocator = allocator
        self.deviceMapper = deviceMapper
    }

    /// zram disksize must be whole pages.
    static func pageRounded(_ bytes: UInt64) -> UInt64 { bytes / 4096 * 4096 }

    /// Makes the store and pushes its release onto `teardown`. Returns it with the device the snapshot uses.
    /// `smallSectorLabel`: when set, the snapshot gets a 512-byte-sector loop device labelled so (the
    /// instance's "imgsandbox-PID:" prefix lets a crash sweep and the tests find it).
    static func make(name: String, uuid: String, settings: SandboxSettings, smallSectorLabel: String? = nil,
                     allocator: ZramAllocator, deviceMapper: DeviceMapper, teardown: Teardown) throws -> (CowStore, DeviceNumber) {
        let step = pageRounded(settings.cowSize)
        let maximum = max(step, pageRounded(settings.effectiveCowMax))
        let store = CowStore(linearName: maximum > step ? name : nil, stepBytes: step, maxBytes: maximum,
                             allocator: allocator, deviceMapper: deviceMapper)
        let first = try allocator.add(bytes: step)
        store.state.withLock { $0.segments = [(first, step)] }
        teardown.push("free COW store zram devices") { try store.freeAll() }
        let zramDevice = try Sandbox.step("stat \(allocator.zram.devicePath(first))") {
            try BlockDevice.deviceNumber(of: allocator.zram.devicePath(first))
        }
        var top = (path: allocator.zram.devicePath(first), number: zramDevice)
        if let linearName = store.linearName {
            let device = try Sandbox.step("create dm \(linearName)") {
                try deviceMapper.create(name: linearName, uuid: uuid, targets: [
                    DMTarget.linear(start: 0, length: step / 512, device: zramDevice, offset: 0),
                ], readOnly: false)
            }
            teardown.push("remove dm \(linearName)") { try store.removeLinear() }
            top = (device.path, device.deviceNumber)
        }
        guard let smallSectorLabel else { return (store, top.number) }
        let loop = try store.attachSmallSectorLoop(over: top.path, number: top.number, label: smallSectorLabel)
        teardown.push("detach \(loop.path)") { try store.detachSmallSectorLoop() }
        return (store, loop.deviceNumber)
    }

    /// Read-write, buffered (no direct I/O: that would need the 4 KiB alignment of zram), 512-byte sectors.
    /// O_DSYNC: each write reaches zram before the snapshot sees it done. Without it the loop fills the page
    /// cache at memory speed, a burst (an fsync of a large file) allocates COW faster than the watcher grows
    /// the store and the snapshot overflows (seen in the VM), and dirty uncompressed copies pile up in RAM.
    /// Autoclear: after a crash the kernel detaches it as soon as the swept snapshot lets go, before the
    /// sweep frees what lies below it.
    private func attachSmallSectorLoop(over path: String, number: DeviceNumber, label: String) throws -> LoopDevice {
        // udev may make /dev/mapper/NAME a symlink, and the loop opens its backing with O_NOFOLLOW: open the
        // kernel's node it points to (a trusted /dev path, checked to be the same device).
        let node = try Sandbox.step("resolve \(path)") { () throws -> String in
            guard let resolved = realpath(path, nil) else { throw SystemError("realpath", path, errno: errno) }
            defer { free(resolved) }
            let node = String(cString: resolved)
            guard try BlockDevice.deviceNumber(of: node) == number else { throw SystemError("stat", node, errno: ENODEV) }
            return node
        }
        let loop = try Sandbox.step("attach loop device over \(node)") {
            try LoopDevice.attach(file: node, readOnly: false, autoclear: true, syncWrites: true, label: label)
        }
        state.withLock { $0.smallSectorLoop = loop }
        let sector = try? BlockDevice.logicalBlockSize(of: loop.path)
        guard sector == 512 else {
            try? detachSmallSectorLoop()
            throw SandboxError.stepFailed(step: "check sectors of \(loop.path)", underlying: SystemError(
                "logical block size \(sector.map(String.init) ?? "unknown"), wanted 512", loop.path, errno: EOPNOTSUPP))
        }
        return loop
    }

    /// When less than one step is free and the store may still grow: adds a zram device and reloads the
    /// linear table with it appended. Returns the new size in bytes, or nil when nothing was needed.
    func grow(usedBytes: UInt64, totalBytes: UInt64) throws -> UInt64? {
        guard let linearName else { return nil }
        return try state.withLock { state throws -> UInt64? in
            let current = state.totalBytes
            guard !state.closed, current < maxBytes,
                  Self.needsGrowth(usedBytes: usedBytes, totalBytes: totalBytes, stepBytes: stepBytes) else { return nil }
            let bytes = min(stepBytes, Self.pageRounded(maxBytes - current))
            guard bytes > 0 else { return nil }
            let id = try allocator.add(bytes: bytes)
            do {
                let segments = state.segments + [(id, bytes)]
                let table = try Self.table(segments, zram: allocator.zram)
                try Sandbox.step("reload dm \(linearName) to \(current + bytes) bytes") {
                    try deviceMapper.load(name: linearName, targets: table)
                    try deviceMapper.suspend(name: linearName)
                    // A device left suspended would hang the sandbox: one more try before giving up.
                    do { try deviceMapper.resume(name: linearName) } catch { try deviceMapper.resume(name: linearName) }
                }
                state.segments = segments
            } catch {
                try? allocator.free(id)
                throw error
            }
            // The loop on top keeps its old size until told; if this fails, the next grow tells it again.
            if let loop = state.smallSectorLoop {
                try Sandbox.step("update the size of \(loop.path)") { try loop.setCapacity() }
            }
            return state.totalBytes
        }
    }

    /// Grow while less than one step is free: with the watcher polling about once a second, a writer must
    /// fill a whole step within a poll to overflow first. An unused zram device costs almost no memory.
    static func needsGrowth(usedBytes: UInt64, totalBytes: UInt64, stepBytes: UInt64) -> Bool {
        totalBytes < usedBytes + stepBytes
    }

    /// The linear table: each zram device's sectors one after the other.
    static func table(_ segments: [(id: Int, bytes: UInt64)], zram: Zram) throws -> [DMTarget] {
        var start: UInt64 = 0
        var targets: [DMTarget] = []
        for segment in segments {
            let device = try Sandbox.step("stat \(zram.devicePath(segment.id))") {
                try BlockDevice.deviceNumber(of: zram.devicePath(segment.id))
            }
            targets.append(.linear(start: start, length: segment.bytes / 512, device: device, offset: 0))
            start += segment.bytes / 512
        }
        return targets
    }

    var zramIDs: [Int] { state.withLock { $0.segments.map(\.id) } }

    private func removeLinear() throws {
        guard let linearName else { return }
        try state.withLock { state in
            state.closed = true
            try deviceMapper.remove(name: linearName)
        }
    }

    private func detachSmallSectorLoop() throws {
        try state.withLock { state in
            state.closed = true
            try state.smallSectorLoop?.detach()
            state.smallSectorLoop = nil
        }
    }

    /// Frees the devices newest first; what failed stays listed, so a retried teardown continues there.
    private func freeAll() throws {
        try state.withLock { state in
            state.closed = true
            while let last = state.segments.last {
                try allocator.release(last.id)
                state.segments.removeLast()
            }
        }
    }
}
