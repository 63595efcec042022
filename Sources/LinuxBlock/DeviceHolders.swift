import CLinux
import Glibc

/// What holds a block device, for the log line of a release that answers EBUSY: its mounts in every mount
/// namespace (each seen from its namespace's root, so a chrooted holder cannot hide them), a superblock
/// still alive (/sys/fs/TYPE/DEV) when no mount is left, processes with the device node open or a file
/// of it mapped, and devices stacked on it. Reading it changes nothing.
public struct DeviceHolders: Sendable, Equatable, CustomStringConvertible {
    /// "zram1", "loop0", "dm-3".
    public let device: String
    /// "/run/x (this namespace)", "/run/x (mnt:[4026532200] of pid 12 busybox)".
    public var mounts: [String] = []
    /// "/sys/fs/ext4/zram1"
    public var superblocks: [String] = []
    /// "pid 40 (cat) fd 3", "pid 41 (fsx) maps a file of it".
    public var processes: [String] = []
    /// /sys/block/DEV/holders (dm devices stacked on it).
    public var stacked: [String] = []

    public init(device: String) { self.device = device }

    public var isEmpty: Bool { mounts.isEmpty && superblocks.isEmpty && processes.isEmpty && stacked.isEmpty }

    public var description: String {
        var parts = mounts.map { "mounted at \($0)" } + processes + stacked.map { "held by \($0)" }
        let alone = mounts.isEmpty && processes.isEmpty && stacked.isEmpty
        parts += superblocks.map { alone ? "superblock \($0) alive with no mount, fd or holder in sight" : "superblock \($0)" }
        return "\(device): " + (parts.isEmpty ? "nothing holds it" : parts.joined(separator: "; "))
    }

    /// Everything that holds `device` (a name under /sys/class/block) now. Lists at most 8 processes.
    public static func find(device: String, procRoot: String = "/proc", sysRoot: String = "/sys") -> DeviceHolders {
        var found = DeviceHolders(device: device)
        guard let number = (try? FileIO.readValue("\(sysRoot)/class/block/\(device)/dev")).flatMap(DeviceNumber.init) else {
            return found
        }
        let matches = { (entry: MountEntry) in entry.deviceNumber == number }
        found.mounts = Mount.mountPoints().filter(matches).map { "\($0.mountPoint) (this namespace)" }
        found.mounts += MountCopies.mountsInOtherNamespaces(procRoot: procRoot).flatMap { namespace in
            namespace.entries.filter(matches).map { "\($0.mountPoint) (\(namespace.namespace) of pid \(namespace.pid) \(namespace.command))" }
        }
        for type in FileIO.list("\(sysRoot)/fs").sorted() where FileIO.exists("\(sysRoot)/fs/\(type)/\(device)") {
            found.superblocks.append("\(sysRoot)/fs/\(type)/\(device)")
        }
        found.processes = processes(using: number, node: "/dev/\(device)", procRoot: procRoot)
        found.stacked = FileIO.list("\(sysRoot)/class/block/\(device)/holders").sorted()
        return found
    }

    /// Processes with the node open, or a mapping of a file on the device (/proc/PID/maps gives major:minor
    /// in hex). A file merely open on the filesystem shows as its mount, above.
    static func processes(using number: DeviceNumber, node: String, procRoot: String) -> [String] {
        let mapped = " " + String(number.major, radix: 16).leftPadded(2) + ":" + String(number.minor, radix: 16).leftPadded(2) + " "
        var found: [String] = []
        for pid in FileIO.list(procRoot).compactMap(Int32.init).sorted() where found.count < 8 {
            let command = (try? FileIO.readValue("\(procRoot)/\(pid)/comm")) ?? "?"
            for fd in FileIO.list("\(procRoot)/\(pid)/fd") where MountCopies.readLink("\(procRoot)/\(pid)/fd/\(fd)") == node {
                found.append("pid \(pid) (\(command)) fd \(fd)")
            }
            if let maps = try? FileIO.readText("\(procRoot)/\(pid)/maps"), maps.contains(mapped) {
                found.append("pid \(pid) (\(command)) maps a file of it")
            }
        }
        return found
    }
}

private extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

extension Mount {
    /// `unmount` whose EBUSY names the processes that map a file of the filesystem or hold its device node
    /// (a passthrough mapping outlives its FUSE file, so the FUSE layer counts nothing open), or says none does.
    public static func unmountNamingHolders(_ target: String) throws(SystemError) {
        var info = stat()
        let device = stat(target, &info) == 0 ? DeviceNumber(rawValue: UInt64(info.st_dev)) : nil
        do {
            try unmount(target)
        } catch where error.errno == EBUSY {
            let users = device.map { DeviceHolders.processes(using: $0, node: "", procRoot: "/proc") } ?? []
            let held = users.isEmpty ? "no process maps a file of it" : users.joined(separator: "; ")
            throw SystemError(error.operation, "\(target) (\(held))", errno: EBUSY)
        }
    }
}
