/// One line of /proc/self/mountinfo.
public struct MountEntry: Sendable, Equatable {
    public let mountPoint: String
    public let source: String
    public let type: String
    /// Per-mount options followed by the superblock options not already listed ("ro,noatime,errors=remount-ro").
    public let options: String
    public let deviceNumber: DeviceNumber
    /// The mount id (first field), what statx STATX_MNT_ID reports for a file on this mount; 0 when unknown.
    public let id: UInt64

    public init(mountPoint: String, source: String, type: String, options: String, deviceNumber: DeviceNumber,
                id: UInt64 = 0) {
        self.id = id
        self.mountPoint = mountPoint
        self.source = source
        self.type = type
        self.options = options
        self.deviceNumber = deviceNumber
    }

    /// "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue"; nil if malformed.
    public init?(mountInfoLine line: some StringProtocol) {
        let fields = String(line).split(separator: " ", omittingEmptySubsequences: false)
        // id parent dev root mountpoint options [optional...] - type source superoptions
        guard fields.count >= 10, let id = UInt64(fields[0]), let dev = DeviceNumber(fields[2]),
              let separator = fields[6...].firstIndex(of: "-"), fields.count >= separator + 4 else { return nil }
        var options = fields[5].split(separator: ",").map(String.init)
        for option in fields[separator + 3].split(separator: ",").map(String.init) where !options.contains(option) {
            options.append(option)
        }
        self.init(mountPoint: Self.unescape(fields[4]), source: Self.unescape(fields[separator + 2]),
                  type: Self.unescape(fields[separator + 1]), options: options.joined(separator: ","),
                  deviceNumber: dev, id: id)
    }

    /// Whether `option` ("user_id=0") is one of the options, whole.
    public func hasOption(_ option: String) -> Bool {
        options.split(separator: ",").contains { $0 == option }
    }

    /// The kernel writes space, tab, newline and backslash as \040 \011 \012 \134 (octal).
    static func unescape(_ text: some StringProtocol) -> String {
        var bytes: [UInt8] = []
        let utf8 = Array(text.utf8)
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "\\"), let value = octal(utf8[(i + 1)...].prefix(3)) {
                bytes.append(value)
                i += 4
            } else {
                bytes.append(utf8[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func octal(_ digits: ArraySlice<UInt8>) -> UInt8? {
        guard digits.count == 3 else { return nil }
        var value = 0
        for digit in digits {
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "7") else { return nil }
            value = value * 8 + Int(digit - UInt8(ascii: "0"))
        }
        return value <= 255 ? UInt8(value) : nil
    }
}
