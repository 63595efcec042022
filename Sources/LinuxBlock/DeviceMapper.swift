import CLinux
import Glibc

/// Device-mapper through one fd on /dev/mapper/control. Thread-safe: each call builds its own dm_ioctl buffer
/// and the kernel serialises operations on a name.
public final class DeviceMapper: Sendable {
    private let fd: FileDescriptor
    private let controlPath: String

    /// First buffer size for answers; doubled on DM_BUFFER_FULL_FLAG up to `maxBufferSize`.
    static let initialBufferSize = 16 * 1024
    static let maxBufferSize = 16 * 1024 * 1024

    /// /dev/mapper/control exists and DM_VERSION answers.
    public static var isAvailable: Bool {
        guard let mapper = try? DeviceMapper() else { return false }
        return (try? mapper.version()) != nil
    }

    public init(controlPath: String = "/dev/mapper/control") throws(SystemError) {
        self.controlPath = controlPath
        fd = try FileDescriptor.open(controlPath, O_RDWR)
    }

    static func nodePath(_ name: String) -> String { "/dev/mapper/\(name)" }

    /// The kernel's dm ioctl interface version as major*1000000 + minor*1000 + patch.
    public func version() throws(SystemError) -> UInt32 {
        try call("DM_VERSION", clinux_DM_VERSION, name: nil) { buffer, _ in clinux_dm_result_version(buffer) }
    }

    /// DM_DEV_CREATE (name, uuid) + DM_TABLE_LOAD (+ DM_READONLY_FLAG) + resume. Creates /dev/mapper/NAME when
    /// udev did not. On any failure removes what it created.
    public func create(name: String, uuid: String, targets: [DMTarget], readOnly: Bool) throws(SystemError) -> DMDevice {
        _ = try call("DM_DEV_CREATE", clinux_DM_DEV_CREATE, name: name, uuid: uuid) { _, _ in () }
        do throws(SystemError) {
            try load(name: name, targets: targets, readOnly: readOnly)
            let raw = try call("DM_DEV_SUSPEND", clinux_DM_DEV_SUSPEND, name: name) { buffer, _ in
                clinux_dm_result_dev(buffer)
            }
            let device = DMDevice(name: name, deviceNumber: DeviceNumber(rawValue: raw))
            if !FileIO.exists(device.path) {
                if mkdir("/dev/mapper", 0o755) != 0 && errno != EEXIST {
                    throw SystemError("mkdir", "/dev/mapper", errno: errno)
                }
                try BlockDevice.makeNode(device.path, device.deviceNumber)
            }
            return device
        } catch {
            _ = try? call("DM_DEV_REMOVE", clinux_DM_DEV_REMOVE, name: name) { _, _ in () }
            throw error
        }
    }

    /// DM_TABLE_LOAD into the inactive slot; takes effect at the next resume.
    public func load(name: String, targets: [DMTarget], readOnly: Bool = false) throws(SystemError) {
        let table = try Self.tablePayload(targets, object: object(name))
        _ = try call("DM_TABLE_LOAD", clinux_DM_TABLE_LOAD, name: name, flags: readOnly ? clinux_DM_READONLY_FLAG : 0,
                     targetCount: UInt32(targets.count), payload: table) { _, _ in () }
    }

    public func suspend(name: String) throws(SystemError) {
        _ = try call("DM_DEV_SUSPEND", clinux_DM_DEV_SUSPEND, name: name, flags: clinux_DM_SUSPEND_FLAG) { _, _ in () }
    }

    public func resume(name: String) throws(SystemError) {
        _ = try call("DM_DEV_SUSPEND", clinux_DM_DEV_SUSPEND, name: name) { _, _ in () }
    }

    /// DM_DEV_REMOVE; also unlinks the /dev/mapper node if it is still there.
    public func remove(name: String) throws(SystemError) {
        try UdevSettle.retryingWhileUdevProbes { () throws(SystemError) in
            _ = try call("DM_DEV_REMOVE", clinux_DM_DEV_REMOVE, name: name) { _, _ in () }
        }
        var info = stat()
        let path = Self.nodePath(name)
        if lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFBLK {
            try systemCall("unlink", path) { unlink(path) }
        }
    }

    /// Each target of the live table with its status text (DM_TABLE_STATUS twice: table lines, then status).
    public func status(name: String) throws(SystemError) -> [(target: DMTarget, status: String)] {
        // A reload between the two reads can change the target count: read again a few times.
        for _ in 0..<3 {
            let table = try targets(name: name, flags: clinux_DM_STATUS_TABLE_FLAG)
            let statuses = try targets(name: name, flags: 0)
            guard table.count == statuses.count else { continue }
            return zip(table, statuses).map { (target: $0, status: $1.params) }
        }
        throw SystemError("DM_TABLE_STATUS", object(name), errno: EAGAIN)
    }

    /// Every mapped device (DM_LIST_DEVICES).
    public func list() throws(SystemError) -> [(name: String, deviceNumber: DeviceNumber)] {
        let objectName = controlPath
        return try call("DM_LIST_DEVICES", clinux_DM_LIST_DEVICES, name: nil) { buffer, size throws(SystemError) in
            try Self.parseDeviceList(buffer, size, object: objectName)
        }
    }

    /// Targets as DM_TABLE_STATUS reports them; `params` holds the table params or the status text.
    private func targets(name: String, flags: UInt32) throws(SystemError) -> [DMTarget] {
        let objectName = object(name)
        return try call("DM_TABLE_STATUS", clinux_DM_TABLE_STATUS, name: name, flags: flags) {
            buffer, size throws(SystemError) in
            try Self.parseTargets(buffer, size, object: objectName)
        }
    }

    /// The targets of a DM_TABLE_STATUS answer (bounds-checked in C); EPROTO if malformed.
    static func parseTargets(_ buffer: UnsafeRawPointer, _ size: Int, object: String) throws(SystemError) -> [DMTarget] {
        var result: [DMTarget] = []
        var index: UInt32 = 0
        var cursor: UInt32 = 0
        var start: UInt64 = 0
        var length: UInt64 = 0
        var type = [CChar](repeating: 0, count: 32)
        var params: UnsafePointer<CChar>? = nil
        while true {
            let rc = clinux_dm_status_next(buffer, size, &index, &cursor, &start, &length, &type, type.count, &params)
            if rc == 0 { return result }
            guard rc == 1, let params else { throw SystemError("DM_TABLE_STATUS", object, errno: EPROTO) }
            let typeName = String(decoding: type.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            result.append(DMTarget(start: start, length: length, type: typeName, params: String(cString: params)))
        }
    }

    /// The devices of a DM_LIST_DEVICES answer (bounds-checked in C); EPROTO if malformed.
    static func parseDeviceList(_ buffer: UnsafeRawPointer, _ size: Int, object: String) throws(SystemError)
        -> [(name: String, deviceNumber: DeviceNumber)]
    {
        var devices: [(name: String, deviceNumber: DeviceNumber)] = []
        var cursor: UInt32 = 0
        var done: Int32 = 0
        var dev: UInt64 = 0
        var name: UnsafePointer<CChar>? = nil
        while true {
            let rc = clinux_dm_list_next(buffer, size, &cursor, &done, &dev, &name)
            if rc == 0 { return devices }
            guard rc == 1, let name else { throw SystemError("DM_LIST_DEVICES", object, errno: EPROTO) }
            devices.append((name: String(cString: name), deviceNumber: DeviceNumber(rawValue: dev)))
        }
    }

    private func object(_ name: String) -> String { "dm:\(name)" }

    /// The DM_TABLE_LOAD payload: one dm_target_spec + params per target, each 8-aligned.
    static func tablePayload(_ targets: [DMTarget], object: String) throws(SystemError) -> [UInt8] {
        // 40-byte spec header upper bound + params + NUL + padding per target.
        let capacity = targets.reduce(0) { $0 + 64 + $1.params.utf8.count + 8 }
        var table = [UInt8](repeating: 0, count: capacity)
        var used = 0
        for target in targets {
            let next = table.withUnsafeMutableBytes {
                clinux_dm_table_append($0.baseAddress, $0.count, used, target.start, target.length, target.type, target.params)
            }
            // type longer than 15 bytes (the kernel's field) or params with an embedded NUL.
            guard next > 0 else { throw SystemError("DM_TABLE_LOAD", object, errno: EINVAL) }
            used = next
        }
        return Array(table[0..<used])
    }

    /// Runs one dm ioctl and hands the answer buffer to `parse`; grows the buffer while the kernel says it is full.
    private func call<R>(
        _ operation: String, _ request: UInt, name: String?, uuid: String? = nil, flags: UInt32 = 0,
        targetCount: UInt32 = 0, payload: [UInt8] = [],
        _ parse: (UnsafeRawPointer, Int) throws(SystemError) -> R
    ) throws(SystemError) -> R {
        let objectName = name.map { object($0) } ?? controlPath
        var size = max(Self.initialBufferSize, Int(clinux_DM_IOCTL_SIZE) + payload.count + 8)
        while true {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
            defer { buffer.deallocate() }
            try systemCall(operation, objectName) {
                payload.withUnsafeBytes { bytes in
                    clinux_dm_ioctl(fd.raw, request, buffer, size, name, uuid, flags, targetCount,
                                    bytes.baseAddress, bytes.count)
                }
            }
            if clinux_dm_result_flags(buffer) & clinux_DM_BUFFER_FULL_FLAG != 0 {
                guard size < Self.maxBufferSize else { throw SystemError(operation, objectName, errno: ENOBUFS) }
                size *= 2
                continue
            }
            return try parse(UnsafeRawPointer(buffer), size)
        }
    }
}
