import Glibc

/// mount(2) flags (MS_*).
public struct MountFlags: OptionSet, Sendable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let rdonly = MountFlags(rawValue: UInt(MS_RDONLY))
    public static let nosuid = MountFlags(rawValue: UInt(MS_NOSUID))
    public static let nodev = MountFlags(rawValue: UInt(MS_NODEV))
    public static let noexec = MountFlags(rawValue: UInt(MS_NOEXEC))
}
