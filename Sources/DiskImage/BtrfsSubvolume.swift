/// Which btrfs subvolume a mount shows: `subvol=` (a path from the filesystem's top level) or `subvolid=`, as
/// fstab's options or the kernel's `rootflags=` give it. Without either the kernel mounts the filesystem's
/// default subvolume (`btrfs subvolume set-default`), which is what a mount with no option here shows too.
public enum BtrfsSubvolume: Sendable, Hashable, CustomStringConvertible {
    /// Relative to the top level, without leading or trailing "/": "root", "@/home"; "" is the top level.
    case path(String)
    /// 5 is the top level.
    case id(UInt64)

    /// The longest path accepted (the kernel's PATH_MAX less room for the option name).
    public static let maxPathBytes = 4000

    /// The subvolume that mount options name (`subvol=` wins over `subvolid=`, as the kernel resolves the
    /// path); nil when none does; a reason when the value is unusable (control bytes, "." or ".." components,
    /// too long, a subvolid that is not a number).
    public static func from(options: [String]) -> Result<BtrfsSubvolume?, InvalidSubvolume> {
        if let value = options.last(where: { $0.hasPrefix("subvol=") })?.dropFirst(7) {
            return parse(path: String(value)).map { $0 }
        }
        if let value = options.last(where: { $0.hasPrefix("subvolid=") })?.dropFirst(9) {
            guard let id = UInt64(value), id > 0 else { return .failure(InvalidSubvolume(value: "subvolid=\(value)")) }
            return .success(.id(id))
        }
        return .success(nil)
    }

    /// `rootflags=`'s comma-separated options.
    public static func from(flags: String) -> Result<BtrfsSubvolume?, InvalidSubvolume> {
        from(options: flags.split(separator: ",").map(String.init))
    }

    static func parse(path: String) -> Result<BtrfsSubvolume, InvalidSubvolume> {
        let bytes = Array(path.utf8)
        let parts = path.split(separator: "/")
        guard bytes.count <= maxPathBytes, !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: ",") }),
              !parts.contains(where: { $0 == "." || $0 == ".." }) else {
            return .failure(InvalidSubvolume(value: "subvol=\(path)"))
        }
        return .success(.path(parts.joined(separator: "/")))
    }

    /// The mount option that selects it.
    public var mountOption: String {
        switch self {
        case .path(let path): "subvol=/\(path)"
        case .id(let id): "subvolid=\(id)"
        }
    }

    public var description: String { mountOption }
}

public struct InvalidSubvolume: Error, Sendable, Equatable, CustomStringConvertible {
    public let value: String
    public var description: String { "\(value.debugDescription) names no usable btrfs subvolume" }
}
