/// A FAT partition's ownership options from its fstab line, read as Linux vfat reads them: `uid=` and `gid=`
/// (numbers), `umask=` (both masks), `fmask=`, `dmask=` (octal), each later option overriding what an earlier
/// one set. Without them: root's, with umask 022 (what a boot-time mount gets).
public struct FATMountOptions: Sendable, Equatable {
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var fileMask: UInt32 = 0o022
    public var directoryMask: UInt32 = 0o022

    public init() {}

    /// The options of one fstab line; a value vfat would refuse (the mount would fail) is the reason why.
    public static func parse(_ options: [String]) -> Result<FATMountOptions, Reason> {
        var parsed = FATMountOptions()
        for option in options {
            let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, ["uid", "gid", "umask", "fmask", "dmask"].contains(parts[0]) else { continue }
            let radix = parts[0].hasSuffix("id") ? 10 : 8
            guard let value = UInt32(parts[1], radix: radix) else { return .failure(Reason(option: option)) }
            switch parts[0] {
            case "uid": parsed.uid = value
            case "gid": parsed.gid = value
            case "umask": (parsed.fileMask, parsed.directoryMask) = (value, value)
            case "fmask": parsed.fileMask = value
            default: parsed.directoryMask = value
            }
        }
        return .success(parsed)
    }

    public struct Reason: Error, Equatable, CustomStringConvertible {
        public let option: String
        public var description: String { "vfat would refuse the option \(option)" }
    }

    /// Permission bits of an entry (fat_make_mode): rwx for everyone, less write on a file with the read-only
    /// attribute, less the file or directory mask.
    public func permissions(directory: Bool, readOnly: Bool) -> UInt32 {
        let all: UInt32 = readOnly && !directory ? 0o555 : 0o777
        return all & ~(directory ? directoryMask : fileMask) & 0o777
    }
}
