/// One line of /etc/fstab (fstab(5)): fields split on blanks, octal escapes (`\040`) decoded.
public struct FstabEntry: Sendable, Equatable {
    public let source: String
    public let mountPoint: String
    public let type: String
    public let options: [String]

    public init(source: String, mountPoint: String, type: String = "auto", options: [String] = ["defaults"]) {
        self.source = source
        self.mountPoint = mountPoint
        self.type = type
        self.options = options
    }

    public var isSwap: Bool { type == "swap" || mountPoint == "swap" || mountPoint == "none" }
    /// Not mounted at boot, so not in the sandbox either.
    public var isNoauto: Bool { options.contains("noauto") }
    public var isReadOnly: Bool { options.contains("ro") }

    /// What the source names (`PARTUUID=`, `UUID=`, `LABEL=`, `PARTLABEL=`, a /dev/disk/by-* link, a device path).
    public var spec: FstabSource { FstabSource(source) }
}

public enum FstabSource: Sendable, Equatable {
    case partUUID(String)
    case uuid(String)
    case label(String)
    case partLabel(String)
    /// A partition device path (/dev/mmcblk0p2, /dev/sda2, /dev/vda2, /dev/nvme0n1p2): its number.
    case partitionNumber(Int)
    /// `/dev/root`: whatever the kernel mounted as root (Yocto, Buildroot).
    case root
    /// `/dev/disk/by-slot/active/NAME` (`other/NAME`): an A/B image's partition of that slot (ABSlot).
    case slot(name: String, active: Bool)
    /// `/dev/mapper/VG-LV` (dashes in either name doubled) or `/dev/VG/LV`: an LVM2 logical volume.
    case logicalVolume(group: String, volume: String)
    /// proc, tmpfs, a whole disk, a network share...: nothing in the image.
    case other(String)

    init(_ source: String) {
        let tags: [(String, (String) -> FstabSource)] = [
            ("PARTUUID=", { .partUUID($0) }), ("UUID=", { .uuid($0) }),
            ("PARTLABEL=", { .partLabel($0) }), ("LABEL=", { .label($0) }),
        ]
        for (tag, make) in tags where source.hasPrefix(tag) {
            self = make(Self.unquote(String(source.dropFirst(tag.count))))
            return
        }
        let links: [(String, (String) -> FstabSource)] = [
            ("/dev/disk/by-partuuid/", { .partUUID($0) }), ("/dev/disk/by-uuid/", { .uuid($0) }),
            ("/dev/disk/by-partlabel/", { .partLabel($0) }), ("/dev/disk/by-label/", { .label($0) }),
        ]
        for (prefix, make) in links where source.hasPrefix(prefix) {
            self = make(String(source.dropFirst(prefix.count)))
            return
        }
        if source == "/dev/root" {
            self = .root
        } else if let (name, active) = Self.slotLink(source) {
            self = .slot(name: name, active: active)
        } else if let n = Self.devicePartition(source) {
            self = .partitionNumber(n)
        } else if let (group, volume) = Self.logicalVolume(source) {
            self = .logicalVolume(group: group, volume: volume)
        } else {
            self = .other(source)
        }
    }

    /// `/dev/mapper/my--vg-root` -> ("my-vg", "root"); `/dev/vg/root` -> ("vg", "root").
    static func logicalVolume(_ path: String) -> (String, String)? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0].isEmpty, parts[1] == "dev" else { return nil }
        if parts[2] == "mapper" {
            // device-mapper names double a dash inside a name; a single dash separates VG and LV.
            var names = [""]
            var chars = parts[3][...]
            while let c = chars.popFirst() {
                if c == "-", chars.first == "-" {
                    names[names.count - 1].append("-")
                    chars.removeFirst()
                } else if c == "-" {
                    names.append("")
                } else {
                    names[names.count - 1].append(c)
                }
            }
            guard names.count == 2, !names[0].isEmpty, !names[1].isEmpty else { return nil }
            return (names[0], names[1])
        }
        let notGroups: Set<Substring> = ["disk", "block", "md", "char", "bus", "input", "net", "pts", "shm", "snd", "dri"]
        guard !notGroups.contains(parts[2]), !parts[2].isEmpty, !parts[3].isEmpty else { return nil }
        return (String(parts[2]), String(parts[3]))
    }

    /// `/dev/disk/by-slot/active/system` -> ("system", true); `.../other/boot` -> ("boot", false).
    static func slotLink(_ path: String) -> (String, Bool)? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0].isEmpty, parts[1] == "dev", parts[2] == "disk", parts[3] == "by-slot",
              parts[4] == "active" || parts[4] == "other", !parts[5].isEmpty else { return nil }
        return (String(parts[5]), parts[4] == "active")
    }

    /// `"abc"` or `'abc'` -> abc (util-linux accepts quoted tag values).
    private static func unquote(_ value: String) -> String {
        guard value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first else {
            return value
        }
        return String(value.dropFirst().dropLast())
    }

    /// The partition number of a partition of the first disk (the image is one disk): mmcblkXpN (any X: an
    /// SD card is mmcblk1 on boards whose eMMC is mmcblk0, and the image is whichever one it was written to),
    /// nvme0n1pN, sdaN, vdaN, hdaN, xvdaN. Other disks (/dev/sdb1, a USB stick) are not in the image.
    static func devicePartition(_ path: String) -> Int? {
        var path = Substring(path)
        if path.hasPrefix("/dev/mmcblk") {
            let rest = path.dropFirst("/dev/mmcblk".count)
            let controller = rest.prefix { $0 >= "0" && $0 <= "9" }
            guard !controller.isEmpty, controller.count <= 2 else { return nil }
            path = "/dev/mmcblk0" + rest.dropFirst(controller.count)
        }
        for disk in ["/dev/mmcblk0p", "/dev/nvme0n1p", "/dev/sda", "/dev/vda", "/dev/hda", "/dev/xvda"]
        where path.hasPrefix(disk) {
            let digits = path.dropFirst(disk.count)
            guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy({ $0 >= "0" && $0 <= "9" }),
                  let n = Int(digits), n > 0 else { return nil }
            return n
        }
        return nil
    }
}

public enum Fstab {
    /// An fstab larger than this is not read (an image's file is untrusted).
    public static let maxBytes = 256 * 1024

    /// Entries in file order. Comment lines (`#` first), blank lines and lines with fewer than two fields are
    /// skipped, as mount(8) does.
    public static func parse(_ text: [UInt8]) -> [FstabEntry] {
        var entries: [FstabEntry] = []
        for line in text.split(separator: 0x0A, omittingEmptySubsequences: true) {
            let fields = line.split(whereSeparator: { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }).map { unescape(Array($0)) }
            guard let first = fields.first, !first.hasPrefix("#"), fields.count >= 2 else { continue }
            entries.append(FstabEntry(source: first, mountPoint: fields[1],
                                      type: fields.count > 2 ? fields[2] : "auto",
                                      options: fields.count > 3 ? fields[3].split(separator: ",").map(String.init) : ["defaults"]))
        }
        return entries
    }

    public static func parse(_ text: String) -> [FstabEntry] { parse(Array(text.utf8)) }

    /// `\` + three octal digits is that byte (`\040` space, `\011` tab, `\134` backslash); anything else stays.
    static func unescape(_ field: [UInt8]) -> String {
        var out: [UInt8] = []
        var i = 0
        while i < field.count {
            if field[i] == 0x5C, i + 3 < field.count {
                let octal = field[(i + 1)...(i + 3)]
                if octal.allSatisfy({ $0 >= 0x30 && $0 <= 0x37 }) {
                    let value = octal.reduce(0) { $0 * 8 + Int($1 - 0x30) }
                    if value <= 0xFF {
                        out.append(UInt8(value))
                        i += 4
                        continue
                    }
                }
            }
            out.append(field[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}
