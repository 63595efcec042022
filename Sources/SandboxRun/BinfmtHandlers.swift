import Glibc
import LinuxBlock

/// The kernel's binfmt_misc registrations (one file per entry in /proc/sys/fs/binfmt_misc), and which of
/// them can run a given binary from inside a sandbox. The directory is a parameter so tests use a fake one.
public struct BinfmtHandlers: Sendable {
    public struct Entry: Equatable, Sendable {
        public let name: String
        public let enabled: Bool
        public let interpreter: String
        public let flags: String
        public let offset: Int
        public let magic: [UInt8]
        public let mask: [UInt8]

        /// The F flag: the kernel opened the interpreter at registration, so it runs inside any chroot.
        public var interpreterPreopened: Bool { flags.contains("F") }

        /// Parses an entry file; nil for extension entries and anything malformed.
        init?(name: String, text: String) {
            var enabled = false, interpreter = "", flags = "", offset = 0
            var magic: [UInt8]?, mask: [UInt8]?
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
                switch (parts.first, parts.count) {
                case ("enabled", 1): enabled = true
                case ("interpreter", 2): interpreter = parts[1]
                case ("flags:", 2): flags = parts[1]
                case ("offset", 2): offset = Int(parts[1]) ?? -1
                case ("magic", 2): magic = Self.hex(parts[1])
                case ("mask", 2): mask = Self.hex(parts[1])
                default: break
                }
            }
            guard let magic, !magic.isEmpty, (0...128).contains(offset), offset + magic.count <= 128 else { return nil }
            let fullMask = mask ?? [UInt8](repeating: 0xff, count: magic.count)
            guard fullMask.count == magic.count else { return nil }
            self.name = name
            self.enabled = enabled
            self.interpreter = interpreter
            self.flags = flags
            self.offset = offset
            self.magic = magic
            self.mask = fullMask
        }

        static func hex(_ text: String) -> [UInt8]? {
            let digits = Array(text.utf8)
            guard digits.count % 2 == 0 else { return nil }
            var bytes: [UInt8] = []
            for i in stride(from: 0, to: digits.count, by: 2) {
                guard let byte = UInt8(String(decoding: digits[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
                bytes.append(byte)
            }
            return bytes
        }

        /// The kernel's test: every header byte under the mask equals the magic under the mask.
        public func matches(_ header: [UInt8]) -> Bool {
            guard header.count >= offset + magic.count else { return false }
            return magic.indices.allSatisfy { (header[offset + $0] ^ magic[$0]) & mask[$0] == 0 }
        }

        /// The ELF identity an ELF-magic entry is for (class, byte order, e_machine from its magic), else nil.
        public var elfIdentity: ELFIdentity? {
            guard offset == 0, magic.count >= 20, Array(magic[0..<4]) == [0x7f, 0x45, 0x4c, 0x46],
                  mask[4] == 0xff, mask[5] == 0xff, mask[18] == 0xff, mask[19] == 0xff else { return nil }
            let little = magic[5] == 1
            let machine = little ? UInt16(magic[18]) | UInt16(magic[19]) << 8 : UInt16(magic[18]) << 8 | UInt16(magic[19])
            // armhf is the likelier reading of a 32-bit ARM entry (the header alone cannot say hard-float).
            return ELFIdentity(is64Bit: magic[4] == 2, littleEndian: little, machine: machine, flags: 0x400)
        }
    }

    public static let kernelDirectory = "/proc/sys/fs/binfmt_misc"

    public let directory: String
    /// binfmt_misc is mounted (its `status` file exists) and globally enabled.
    public let mounted: Bool
    public let globallyEnabled: Bool
    public let entries: [Entry]

    public init(directory: String = BinfmtHandlers.kernelDirectory) {
        self.directory = directory
        let status = Self.readText("\(directory)/status")
        mounted = status != nil
        globallyEnabled = status?.hasPrefix("enabled") ?? false
        var entries: [Entry] = []
        if let dir = opendir(directory) {
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                let name = withUnsafePointer(to: entry.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
                }
                guard !name.hasPrefix("."), name != "status", name != "register",
                      let text = Self.readText("\(directory)/\(name)"), let parsed = Entry(name: name, text: text) else { continue }
                entries.append(parsed)
            }
        }
        self.entries = entries.sorted { $0.name < $1.name }
    }

    /// Enabled entries matching `header`, in the kernel's order (it tries entries newest first; the
    /// directory does not say which is newest, so any match counts).
    public func handlers(for header: [UInt8]) -> [Entry] {
        guard globallyEnabled else { return [] }
        return entries.filter { $0.enabled && $0.matches(header) }
    }

    private static func readText(_ path: String) -> String? {
        guard let fd = try? FileDescriptor.open(path, O_RDONLY) else { return nil }
        return String(decoding: ImageRoot.readAll(fd, limit: 4096), as: UTF8.self)
    }
}
