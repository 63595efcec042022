import Glibc

/// A bubblewrap (bwrap) command line and the descriptors it reads: each passed fd becomes 3, 4, ... in
/// bwrap, in the order passed. Shared by `run` (SandboxRun, which spawns it with a terminal and a status
/// pipe) and the image cache's helpers (qemu-img, spawned with output pipes).
public struct Bubblewrap {
    static let candidates = ["/usr/bin/bwrap", "/bin/bwrap"]

    /// Where bwrap is installed, if it is (doctor reports it).
    public static var installedPath: String? { candidates.first { access($0, X_OK) == 0 } }

    /// Entries of a new /proc that reach the whole kernel (sysctls, the SysRq trigger, hardware tables):
    /// root without capabilities may still write many of them (the owner's mode bits), so they are
    /// covered by the host's, read-only. bwrap's own cover does not reliably include /proc/sys.
    public static let kernelWideProc = ["sys", "sysrq-trigger", "irq", "bus", "fs", "acpi", "scsi", "asound"]

    public var arguments: [String] = []
    public private(set) var passed: [Int32] = []

    public init() {}

    /// The number `fd` will have in bwrap. The caller keeps ownership.
    public mutating func pass(_ fd: Int32) -> String {
        passed.append(fd)
        return String(2 + passed.count)
    }

    public mutating func add(_ words: String...) { arguments += words }

    /// A /proc of the command's own PID namespace; with `kernelWideReadOnly` its kernel-wide entries read-only.
    public mutating func addProc(kernelWideReadOnly: Bool) {
        add("--proc", "/proc")
        guard kernelWideReadOnly else { return }
        for entry in Self.kernelWideProc where access("/proc/\(entry)", F_OK) == 0 {
            add("--ro-bind", "/proc/\(entry)", "/proc/\(entry)")
        }
    }
}
