import Glibc

/// mount(2) flags (MS_*).
public struct MountFlags: OptionSet, Sendable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let rdonly = MountFlags(rawValue: UInt(MS_RDONLY))
    public static let nosuid = MountFlags(rawValue: UInt(MS_NOSUID))
    public static let nodev = MountFlags(rawValue: UInt(MS_NODEV))
    public static let noexec = MountFlags(rawValue: UInt(MS_NOEXEC))
    public static let noatime = MountFlags(rawValue: UInt(MS_NOATIME))
    public static let nodiratime = MountFlags(rawValue: UInt(MS_NODIRATIME))
    public static let relatime = MountFlags(rawValue: UInt(MS_RELATIME))
    public static let synchronous = MountFlags(rawValue: UInt(MS_SYNCHRONOUS))
    public static let silent = MountFlags(rawValue: UInt(MS_SILENT))
    public static let bind = MountFlags(rawValue: UInt(MS_BIND))
    public static let remount = MountFlags(rawValue: UInt(MS_REMOUNT))
    public static let `private` = MountFlags(rawValue: UInt(MS_PRIVATE))
}
