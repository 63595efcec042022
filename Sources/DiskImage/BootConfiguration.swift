/// What an image's boot configuration tells the kernel about its root: `root=`, `rootflags=`, `rootfstype=`,
/// and the file it came from.
public struct KernelRoot: Sendable, Equatable {
    /// The `root=` value as written (`PARTUUID=6c586e13-02`, `/dev/mmcblk0p2`, `UUID=...`).
    public let value: String
    /// `rootflags=` as written (`subvol=root`, `subvolid=256,compress=zstd`).
    public let rootflags: String?
    public let filesystemType: String?
    /// Where it was read, e.g. "cmdline.txt".
    public let file: String

    public init(value: String, rootflags: String? = nil, filesystemType: String? = nil, file: String) {
        self.value = value
        self.rootflags = rootflags
        self.filesystemType = filesystemType
        self.file = file
    }

    public var spec: FstabSource { FstabSource(value) }

    /// The btrfs subvolume rootflags' `subvol=` or `subvolid=` names (nil: neither, the default subvolume).
    public var subvolume: Result<BtrfsSubvolume?, InvalidSubvolume> { BtrfsSubvolume.from(flags: rootflags ?? "") }
}

/// The boot configuration files imgsandbox reads, where the public image builders put them (on the
/// partition the firmware or boot loader reads: usually the FAT one).
public enum BootFileKind: Sendable, CaseIterable {
    /// balenaOS: U-Boot's `resin_root_part=` (hex, as U-Boot reads it), which its updates rewrite to switch
    /// between resin-rootA and resin-rootB; absent in a fresh image (U-Boot's default: partition 2).
    case balenaEnv
    /// Raspberry Pi firmware: the whole file is the kernel command line.
    case cmdline
    /// extlinux/syslinux (U-Boot distro boot, NixOS): the default label's APPEND.
    case extlinux
    /// Armbian: `rootdev=`, `rootfstype=`.
    case armbianEnv
    /// U-Boot environment import: `rootdev=`, `root=`, or `root=` inside a variable (`bootargs=...`).
    case uEnv
    /// Boot Loader Specification entries (Fedora's /boot, systemd-boot's ESP): the `options` lines of
    /// loader/entries/*.conf, the entry with the highest version first (its `paths` are directories).
    case loaderEntry
    /// U-Boot script compiled with mkimage: a header, then plain text (HAOS: `setenv bootargs_a "root=..."`).
    case bootScript
    /// GRUB: the default menuentry's `linux` line.
    case grub

    /// Paths tried on a boot partition, in this order.
    public var paths: [String] {
        switch self {
        case .balenaEnv: return ["resinOS_uEnv.txt"]
        case .cmdline: return ["cmdline.txt"]
        case .extlinux: return ["extlinux/extlinux.conf", "boot/extlinux/extlinux.conf"]
        case .loaderEntry: return ["loader/entries", "boot/loader/entries"]
        case .armbianEnv: return ["armbianEnv.txt", "boot/armbianEnv.txt"]
        case .uEnv: return ["uEnv.txt", "boot/uEnv.txt"]
        case .bootScript: return ["boot.scr", "boot/boot.scr"]
        case .grub: return ["grub/grub.cfg", "boot/grub/grub.cfg", "grub2/grub.cfg", "boot/grub2/grub.cfg"]
        }
    }
}

public enum BootConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    case tooLarge(file: String, bytes: Int, limit: Int)
    case notText(file: String, offset: Int)

    public var description: String {
        switch self {
        case .tooLarge(let file, let bytes, let limit):
            return "\(file) is \(bytes) bytes, more than the \(limit) a boot configuration may have: not read"
        case .notText(let file, let offset):
            return "\(file) is not text (a NUL or control byte at offset \(offset)): not read"
        }
    }
}

public enum BootConfiguration {
    /// Larger files are refused unread: the real ones are a few KiB (a GRUB config with many kernels ~20 KiB).
    public static let maxBytes = 256 * 1024

    /// The root the file names, nil when it names none. `file` is the name used in messages.
    public static func root(in bytes: [UInt8], kind: BootFileKind, file: String) throws(BootConfigurationError) -> KernelRoot? {
        guard bytes.count <= maxBytes else { throw .tooLarge(file: file, bytes: bytes.count, limit: maxBytes) }
        let text: [UInt8]
        if kind == .bootScript {
            text = scriptText(bytes)
        } else {
            text = bytes
        }
        let string = try Self.text(text, file: file)
        let arguments: [String]?
        switch kind {
        case .cmdline: arguments = KernelCommandLine.split(string)
        case .extlinux: arguments = Extlinux.defaultAppend(string).map(KernelCommandLine.split)
        case .grub: arguments = Grub.defaultLinuxArguments(string)
        case .loaderEntry: arguments = LoaderEntry.options(string)
        case .armbianEnv, .uEnv: return EnvFile.root(string, file: file)
        case .balenaEnv: return EnvFile.balenaRoot(string, file: file)
        case .bootScript: arguments = KernelCommandLine.firstLineWithRoot(string)
        }
        return arguments.flatMap { KernelCommandLine.root($0, file: file) }
    }

    /// The bytes as text: no NUL or control byte but tab and line ends (a binary file is not configuration).
    public static func text(_ bytes: [UInt8], file: String) throws(BootConfigurationError) -> String {
        if let bad = bytes.firstIndex(where: { $0 == 0 || $0 < 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D }) {
            throw .notText(file: file, offset: bad)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// mkimage's legacy image: a 64-byte header (magic 0x27051956, big-endian); a script (type 6) then has a
    /// list of 32-bit lengths ended by 0, then the text. A file without the header is taken as plain text
    /// (a boot.scr some builders ship uncompiled). The text ends at its first NUL.
    static func scriptText(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.count >= 64, bytes.be32(0) == 0x2705_1956 else { return Array(bytes.prefix { $0 != 0 }) }
        var offset = 64
        if bytes.u8(30) == 6 {  // IH_TYPE_SCRIPT: skip the length list (at most 16 images, bounded)
            var lists = 0
            while offset + 4 <= bytes.count, lists < 16 {
                let length = bytes.be32(offset)
                offset += 4
                lists += 1
                if length == 0 { break }
            }
        }
        guard offset < bytes.count else { return [] }
        return Array(bytes[offset...].prefix { $0 != 0 })
    }
}

/// The kernel's own splitting of its command line (lib/cmdline.c next_arg): blanks separate, double quotes
/// group (and are dropped); the last `root=` wins, as the kernel's parameter parsing overwrites.
enum KernelCommandLine {
    static func split(_ text: String) -> [String] {
        var words: [String] = [], current = "", quoted = false, inWord = false
        for c in text {
            if c == "\"" { quoted.toggle(); inWord = true; continue }
            if !quoted, c == " " || c == "\t" || c == "\n" || c == "\r" {
                if inWord { words.append(current); current = ""; inWord = false }
                continue
            }
            current.append(c)
            inWord = true
        }
        if inWord { words.append(current) }
        return words
    }

    static func root(_ words: [String], file: String) -> KernelRoot? {
        var root: String?, flags: String?, type: String?
        for w in words {
            if w.hasPrefix("root=") { root = String(w.dropFirst(5)) }
            if w.hasPrefix("rootflags=") { flags = String(w.dropFirst(10)) }
            if w.hasPrefix("rootfstype=") { type = String(w.dropFirst(11)) }
        }
        guard let root, !root.isEmpty else { return nil }
        return KernelRoot(value: root, rootflags: flags, filesystemType: type, file: file)
    }

    /// The words of the first line that sets `root=` (A/B scripts set slot A's arguments first).
    static func firstLineWithRoot(_ text: String) -> [String]? {
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.hasPrefix("#") { continue }
            // A script quotes a whole command line as one argument (setenv bootargs "root=... ro"): its
            // quotes delimit the variable's value, not a kernel parameter.
            let words = split(String(line.map { $0 == "\"" || $0 == "'" ? " " : $0 }))
            if words.contains(where: { $0.hasPrefix("root=") }) { return words }
        }
        return nil
    }
}
