import Glibc

/// zram devices through sysfs. The roots are injectable so tests can point it at a fake tree.
public struct Zram: Sendable {
    public let sysfsRoot: String
    public let devRoot: String

    public init(sysfsRoot: String = "/sys", devRoot: String = "/dev") {
        self.sysfsRoot = sysfsRoot
        self.devRoot = devRoot
    }

    private var controlDirectory: String { "\(sysfsRoot)/class/zram-control" }
    private func attribute(_ id: Int, _ name: String) -> String { "\(sysfsRoot)/block/zram\(id)/\(name)" }

    /// The kernel has zram with hot-add support.
    public var isAvailable: Bool { FileIO.exists("\(controlDirectory)/hot_add") }

    /// A new zram device: reading hot_add creates it and returns its id.
    public func add() throws(SystemError) -> Int {
        let path = "\(controlDirectory)/hot_add"
        let text = try FileIO.readValue(path)
        guard let id = Int(text) else { throw SystemError("read", path, errno: EPROTO) }
        return id
    }

    /// Sets the uncompressed size; only possible before first use or after reset (EBUSY otherwise).
    public func setDisksize(_ id: Int, bytes: UInt64) throws(SystemError) {
        try FileIO.writeText(attribute(id, "disksize"), "\(bytes)")
    }

    /// Compression algorithm (lzo-rle, lz4, ...); must precede setDisksize.
    public func setAlgorithm(_ id: Int, _ name: String) throws(SystemError) {
        try FileIO.writeText(attribute(id, "comp_algorithm"), name)
    }

    public func devicePath(_ id: Int) -> String { "\(devRoot)/zram\(id)" }

    /// major:minor from sysfs, for BlockDevice.makeNode where no devtmpfs/udev made the node.
    public func deviceNumber(_ id: Int) throws(SystemError) -> DeviceNumber {
        let path = attribute(id, "dev")
        guard let number = DeviceNumber(try FileIO.readValue(path)) else { throw SystemError("read", path, errno: EPROTO) }
        return number
    }

    public func memoryStats(_ id: Int) throws(SystemError) -> ZramMemoryStats {
        let path = attribute(id, "mm_stat")
        guard let stats = ZramMemoryStats(mmStat: try FileIO.readText(path)) else {
            throw SystemError("read", path, errno: EPROTO)
        }
        return stats
    }

    public func disksize(_ id: Int) throws(SystemError) -> UInt64 {
        let path = attribute(id, "disksize")
        guard let size = UInt64(try FileIO.readValue(path)) else { throw SystemError("read", path, errno: EPROTO) }
        return size
    }

    /// Frees the device's memory and size (EBUSY while it is open).
    public func reset(_ id: Int) throws(SystemError) {
        try UdevSettle.retryingWhileUdevProbes { () throws(SystemError) in try FileIO.writeText(attribute(id, "reset"), "1") }
    }

    /// Deletes the device (EBUSY while it is open).
    public func remove(_ id: Int) throws(SystemError) {
        try UdevSettle.retryingWhileUdevProbes { () throws(SystemError) in
            try FileIO.writeText("\(controlDirectory)/hot_remove", "\(id)")
        }
    }

    /// Names of the block devices stacked on this one (a dm device using it as COW store shows here).
    public func holders(_ id: Int) -> [String] {
        FileIO.list("\(sysfsRoot)/block/zram\(id)/holders").sorted()
    }

    public func exists(_ id: Int) -> Bool { FileIO.exists("\(sysfsRoot)/block/zram\(id)") }

    /// Ids of the zram devices present, ascending.
    public func devices() -> [Int] {
        FileIO.list("\(sysfsRoot)/block").compactMap { name in
            name.hasPrefix("zram") ? Int(name.dropFirst(4)) : nil
        }.sorted()
    }
}
