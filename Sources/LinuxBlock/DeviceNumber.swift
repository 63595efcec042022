import CLinux

/// A block device's major:minor, convertible to and from the kernel's dev_t encoding.
public struct DeviceNumber: Sendable, Hashable, CustomStringConvertible {
    public let major: UInt32
    public let minor: UInt32

    public init(major: UInt32, minor: UInt32) {
        self.major = major
        self.minor = minor
    }

    /// From a dev_t (st_rdev, dm_ioctl.dev); glibc's encoding splits major and minor bits.
    public init(rawValue: UInt64) {
        self.major = clinux_major(rawValue)
        self.minor = clinux_minor(rawValue)
    }

    public var rawValue: UInt64 { clinux_makedev(major, minor) }

    /// "7:3", the form device-mapper tables and sysfs `dev` files use.
    public var description: String { "\(major):\(minor)" }

    /// Parses "7:3" (sysfs `dev`, mountinfo); nil for anything else.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let major = UInt32(parts[0]), let minor = UInt32(parts[1]) else { return nil }
        self.init(major: major, minor: minor)
    }
}
