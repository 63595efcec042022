/// One line of a device-mapper table. Start and length are in 512-byte sectors.
public struct DMTarget: Sendable, Equatable {
    public let start: UInt64
    public let length: UInt64
    public let type: String
    public let params: String

    public init(start: UInt64, length: UInt64, type: String, params: String) {
        self.start = start
        self.length = length
        self.type = type
        self.params = params
    }

    /// Maps [start, start+length) onto `device` from sector `offset`.
    public static func linear(start: UInt64, length: UInt64, device: DeviceNumber, offset: UInt64) -> DMTarget {
        DMTarget(start: start, length: length, type: "linear", params: "\(device) \(offset)")
    }

    /// Reads zeros, drops writes: pads an origin up to a larger virtual size.
    public static func zero(start: UInt64, length: UInt64) -> DMTarget {
        DMTarget(start: start, length: length, type: "zero", params: "")
    }

    /// Copy-on-write snapshot of `origin` with exceptions on `cow`: "P" (persistent) or "N", chunk size in sectors.
    public static func snapshot(start: UInt64, length: UInt64, origin: DeviceNumber, cow: DeviceNumber,
                                persistent: Bool, chunkSectors: UInt64) -> DMTarget {
        DMTarget(start: start, length: length, type: "snapshot",
                 params: "\(origin) \(cow) \(persistent ? "P" : "N") \(chunkSectors)")
    }

    /// The dmsetup table line: "0 524288 linear 7:3 81920" (no trailing blank for targets without params).
    public var line: String {
        params.isEmpty ? "\(start) \(length) \(type)" : "\(start) \(length) \(type) \(params)"
    }
}

/// A mapped device as created by DeviceMapper.
public struct DMDevice: Sendable, Equatable {
    public let name: String
    public let deviceNumber: DeviceNumber

    public init(name: String, deviceNumber: DeviceNumber) {
        self.name = name
        self.deviceNumber = deviceNumber
    }

    /// /dev/mapper/NAME
    public var path: String { DeviceMapper.nodePath(name) }
}
