import CLinux
import Glibc

/// An attached loop device. Holds its fd open until close()/detach()/deinit: with autoclear the kernel detaches
/// the device once the last opener (this object, a dm table, a mount) lets go. Thread-safe.
public final class LoopDevice: Sendable {
    public let index: Int
    public let deviceNumber: DeviceNumber
    public var path: String { Self.path(index) }

    /// Our fd on the device: an ioctl holds it, so a concurrent close() cannot free the number under it.
    private let fd: FdLease

    /// How many times attach takes a new free index after another process grabbed the one it was given
    /// (EBUSY at LOOP_CONFIGURE, ENXIO at open).
    static let attachAttempts = 16

    private init(index: Int, deviceNumber: DeviceNumber, fd: consuming FileDescriptor) {
        self.index = index
        self.deviceNumber = deviceNumber
        self.fd = FdLease(fd)
    }

    deinit { close() }

    static func path(_ index: Int) -> String { "/dev/loop\(index)" }

    /// LOOP_CTL_GET_FREE on /dev/loop-control + LOOP_CONFIGURE (offset, sizelimit, LO_FLAGS_READ_ONLY when
    /// readOnly, LO_FLAGS_AUTOCLEAR when autoclear, lo_file_name = `label` truncated to 63 bytes so leftovers
    /// are recognisable). The backing file is opened O_RDONLY (readOnly) | O_CLOEXEC | O_NOFOLLOW, plus O_DSYNC
    /// when `syncWrites`: each write then reaches the backing device before it completes.
    public static func attach(file: String, offset: UInt64 = 0, sizeLimit: UInt64 = 0, readOnly: Bool = true,
                              autoclear: Bool = true, syncWrites: Bool = false, label: String) throws(SystemError) -> LoopDevice {
        // The kernel takes its own reference to the file at LOOP_CONFIGURE.
        let backing = try FileDescriptor.open(file, (readOnly ? O_RDONLY : O_RDWR) | (syncWrites ? O_DSYNC : 0) | O_NOFOLLOW)
        let controlPath = "/dev/loop-control"
        let control = try FileDescriptor.open(controlPath, O_RDWR)

        var flags: UInt32 = 0
        if readOnly { flags |= clinux_LO_FLAGS_READ_ONLY }
        if autoclear { flags |= clinux_LO_FLAGS_AUTOCLEAR }
        let name = truncatedLabel(label)

        for _ in 0..<attachAttempts {
            let index = Int(try systemCall("LOOP_CTL_GET_FREE", controlPath) {
                clinux_ioctl_none(control.raw, clinux_LOOP_CTL_GET_FREE)
            })
            let path = Self.path(index)
            let dev = sysfsDeviceNumber(index)
                ?? DeviceNumber(major: clinux_LOOP_MAJOR, minor: UInt32(index))
            try BlockDevice.makeNode(path, dev)
            guard let loopFD = try openFree(path) else { continue }
            do {
                try systemCall("LOOP_CONFIGURE", path) {
                    clinux_loop_configure(loopFD.raw, backing.raw, offset, sizeLimit, flags, name)
                }
            } catch {
                // EBUSY: another process configured this free device between our GET_FREE and CONFIGURE.
                if error.errno != EBUSY { throw error }
                continue
            }
            return LoopDevice(index: index, deviceNumber: dev, fd: loopFD)
        }
        throw SystemError("LOOP_CONFIGURE", controlPath, errno: EBUSY)
    }

    /// The free device at `path` opened O_RDWR (the kernel forces read-only when the configuring opener cannot
    /// write, and LO_FLAGS_READ_ONLY covers the read-only case); nil on ENXIO: another process bound and
    /// already let go of it (autoclear rundown) since GET_FREE, so the caller asks for another one.
    private static func openFree(_ path: String) throws(SystemError) -> FileDescriptor? {
        do {
            return try FileDescriptor.open(path, O_RDWR)
        } catch {
            if error.errno == ENXIO { return nil }
            throw error
        }
    }

    /// Drops our fd (idempotent; once an ioctl in flight is done). With autoclear and no other opener, the
    /// kernel detaches the device then.
    public func close() {
        fd.retire()
    }

    /// LOOP_CLR_FD, then close. If the device is still open elsewhere (a mount), the kernel only marks it
    /// autoclear and detaches it when that opener goes.
    public func detach() throws(SystemError) {
        try withDescriptor("LOOP_CLR_FD") { fd throws(SystemError) in
            try systemCall("LOOP_CLR_FD", path) { clinux_ioctl_none(fd, clinux_LOOP_CLR_FD) }
        }
        close()
    }

    /// LOOP_SET_CAPACITY: the device takes its backing file's (or block device's) current size, for a backing
    /// device that grew (a reloaded dm table) while the loop was bound.
    public func setCapacity() throws(SystemError) {
        try withDescriptor("LOOP_SET_CAPACITY") { fd throws(SystemError) in
            try systemCall("LOOP_SET_CAPACITY", path) { clinux_ioctl_none(fd, clinux_LOOP_SET_CAPACITY) }
        }
    }

    /// Runs `body` with our fd held open; EBADF once closed.
    func withDescriptor(_ operation: String, _ body: (Int32) throws(SystemError) -> Void) throws(SystemError) {
        guard let current = fd.acquire() else { throw SystemError(operation, path, errno: EBADF) }
        defer { fd.release() }
        try body(current)
    }

    /// LOOP_CLR_FD on /dev/loopN, for a device another (dead) process attached. If it is still open elsewhere
    /// (a mount, a dm table) the kernel only marks it autoclear and detaches it when that opener goes.
    public static func detach(index: Int) throws(SystemError) {
        let path = Self.path(index)
        let fd = try FileDescriptor.open(path, O_RDONLY | O_NONBLOCK)
        try systemCall("LOOP_CLR_FD", path) { clinux_ioctl_none(fd.raw, clinux_LOOP_CLR_FD) }
    }

    /// Attached loop devices from sysfs (/sys/block/loopN/loop/backing_file), with lo_file_name as label.
    /// Reading a label opens the device briefly: a concurrent close/LOOP_CLR_FD of an autoclear device then
    /// completes when that open ends rather than at once.
    public static func attached() -> [(index: Int, backingFile: String, label: String?)] {
        attached(readingLabels: true)
    }

    /// `readingLabels: false` only reads sysfs and never opens a device.
    static func attached(readingLabels: Bool) -> [(index: Int, backingFile: String, label: String?)] {
        var result: [(index: Int, backingFile: String, label: String?)] = []
        for entry in FileIO.list("/sys/block") {
            guard entry.hasPrefix("loop"), let index = Int(entry.dropFirst(4)),
                  let backing = try? FileIO.readText("/sys/block/\(entry)/loop/backing_file") else { continue }
            let file = backing.hasSuffix("\n") ? String(backing.dropLast()) : backing
            result.append((index: index, backingFile: file, label: readingLabels ? label(index) : nil))
        }
        return result.sorted { $0.index < $1.index }
    }

    /// lo_file_name via LOOP_GET_STATUS64, nil if the device cannot be opened or is not bound.
    static func label(_ index: Int) -> String? {
        let path = Self.path(index)
        guard let fd = try? FileDescriptor.open(path, O_RDONLY | O_NONBLOCK) else { return nil }
        var buffer = [CChar](repeating: 0, count: 65)
        var flags: UInt32 = 0
        guard clinux_loop_get_status(fd.raw, &buffer, buffer.count, &flags) == 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The label cut to 63 bytes on a character boundary (lo_file_name is 64 bytes with its NUL).
    static func truncatedLabel(_ label: String) -> String {
        var result = ""
        var size = 0
        for character in label {
            let count = character.utf8.count
            if size + count > 63 { break }
            size += count
            result.append(character)
        }
        return result
    }

    private static func sysfsDeviceNumber(_ index: Int) -> DeviceNumber? {
        guard let text = try? FileIO.readValue("/sys/block/loop\(index)/dev") else { return nil }
        return DeviceNumber(text)
    }
}
