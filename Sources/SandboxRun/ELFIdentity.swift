import Glibc
import LinuxBlock

/// What an ELF header says about the machine a binary needs: class (32/64-bit), byte order, e_machine,
/// and e_flags (ARM's hard-float bit tells armhf from armel).
public struct ELFIdentity: Equatable, Sendable {
    public let is64Bit: Bool
    public let littleEndian: Bool
    public let machine: UInt16
    public let flags: UInt32

    public init(is64Bit: Bool, littleEndian: Bool, machine: UInt16, flags: UInt32 = 0) {
        self.is64Bit = is64Bit
        self.littleEndian = littleEndian
        self.machine = machine
        self.flags = flags
    }

    /// Parses the first bytes of a file; nil unless it is an ELF header (52 bytes for 32-bit, 64 for 64-bit).
    public init?(header: [UInt8]) {
        guard header.count >= 52, header[0] == 0x7f, header[1] == 0x45, header[2] == 0x4c, header[3] == 0x46,
              header[4] == 1 || header[4] == 2, header[5] == 1 || header[5] == 2 else { return nil }
        let is64Bit = header[4] == 2, littleEndian = header[5] == 1
        guard header.count >= (is64Bit ? 64 : 52) else { return nil }
        func u16(_ at: Int) -> UInt16 {
            littleEndian ? UInt16(header[at]) | UInt16(header[at + 1]) << 8 : UInt16(header[at]) << 8 | UInt16(header[at + 1])
        }
        func u32(_ at: Int) -> UInt32 {
            let b = header[at..<at + 4].map(UInt32.init)
            return littleEndian ? b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24 : b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]
        }
        self.init(is64Bit: is64Bit, littleEndian: littleEndian, machine: u16(18), flags: u32(is64Bit ? 48 : 36))
    }

    static let em386: UInt16 = 3, emARM: UInt16 = 40, emX86_64: UInt16 = 62, emAArch64: UInt16 = 183

    /// Debian's name for the architecture ("armhf", "arm64", "amd64" ...), or "ELF machine N (32-bit)".
    public var architecture: String {
        let name: String? = switch machine {
        case Self.em386: "i386"
        case Self.emX86_64: is64Bit ? "amd64" : "x32"
        case Self.emARM: flags & 0x400 != 0 ? "armhf" : "armel"   // EF_ARM_ABI_FLOAT_HARD
        case Self.emAArch64: "arm64"
        case 243: is64Bit ? "riscv64" : "riscv32"
        case 22: is64Bit ? "s390x" : "s390"
        case 21: littleEndian ? "ppc64el" : "ppc64"
        case 20: "powerpc"
        case 8: is64Bit ? (littleEndian ? "mips64el" : "mips64") : (littleEndian ? "mipsel" : "mips")
        case 258: "loong64"
        case 2: "sparc"
        case 43: "sparc64"
        case 50: "ia64"
        case 4: "m68k"
        case 15: "hppa"
        case 42: "sh4"
        case 36902: "alpha"
        default: nil
        }
        return name ?? "ELF machine \(machine) (\(is64Bit ? 64 : 32)-bit)"
    }

    /// Whether this kernel runs such binaries itself: the same machine, or the 32-bit sibling of a 64-bit
    /// host (i386 on amd64, 32-bit ARM on arm64, where the kernel has compat support).
    public func runsNatively(on host: ELFIdentity) -> Bool {
        if machine == host.machine, is64Bit == host.is64Bit, littleEndian == host.littleEndian { return true }
        return !is64Bit && host.is64Bit && littleEndian == host.littleEndian
            && (machine == Self.em386 && host.machine == Self.emX86_64 || machine == Self.emARM && host.machine == Self.emAArch64)
    }

    /// The running binary's own identity (/proc/self/exe): the host's architecture, as this kernel runs it.
    public static func host() -> ELFIdentity? {
        guard let fd = try? FileDescriptor.open("/proc/self/exe", O_RDONLY) else { return nil }
        return ELFIdentity(header: ImageRoot.readAll(fd, limit: 64))
    }
}
