import Glibc

/// What keeps a block device busy, from every place the kernel shows it: mounts in any mount namespace
/// (/proc/*/mountinfo), a filesystem superblock still alive (/sys/fs/TYPE/DEV) with no mount left, process
/// fds on its node, devices stacked on it (/sys/block/DEV/holders) and loop devices backed by it. For
/// log lines and `doctor` when a reset or detach answers EBUSY; reading it changes nothing. Mounts and fds
/// are those of the processes this /proc shows: in a child PID namespace, the host's are invisible.
public struct DeviceHolders: Sendable, Equatable, CustomStringConvertible {
    /// A mount of the device, once per mount namespace (seen through `pid`, a process in it).
    public struct MountUse: Sendable, Equatable {
        public let pid: Int32
        public let mountPoint: String
        /// Whether the namespace is the one this process is in.
        public let inOwnNamespace: Bool
    }

    public struct OpenFile: Sendable, Equatable {
        public let pid: Int32
        public let command: String
        public let fd: Int32
    }

    /// "zram1", "loop0", "dm-3".
    public let device: String
    public var mounts: [MountUse] = []
    /// /sys/fs/TYPE/DEV entries: a mounted filesystem's superblock (or one no mount holds any more).
    public var superblocks: [String] = []
    public var openFiles: [OpenFile] = []
    /// /sys/block/DEV/holders: devices stacked on this one (dm), by their dm name when they have one.
    public var stackedDevices: [String] = []
    /// Loop devices whose backing file is this device's node.
    public var loops: [String] = []

    public init(device: String) { self.device = device }

    public var isEmpty: Bool {
        mounts.isEmpty && superblocks.isEmpty && openFiles.isEmpty && stackedDevices.isEmpty && loops.isEmpty
    }

    /// A superblock with no mount, fd, stacked device or loop left: nothing userspace can release.
    public var onlyKernelHolds: Bool {
        !superblocks.isEmpty && mounts.isEmpty && openFiles.isEmpty && stackedDevices.isEmpty && loops.isEmpty
    }

    /// "zram1: mounted at /x (mount namespace of pid 12); open by pid 40 (cat) fd 3; superblock /sys/fs/ext4/zram1"
    public var description: String {
        var parts: [String] = mounts.map { "mounted at \($0.mountPoint)\($0.inOwnNamespace ? "" : " (mount namespace of pid \($0.pid))")" }
        parts += openFiles.map { "open by pid \($0.pid) (\($0.command)) fd \($0.fd)" }
        parts += stackedDevices.map { "held by \($0)" }
        parts += loops.map { "backs \($0)" }
        if onlyKernelHolds {
            parts += superblocks.map { "superblock \($0) alive with no mount, fd or holder" }
        } else {
            parts += superblocks.map { "superblock \($0)" }
        }
        return "\(device): " + (parts.isEmpty ? "nothing holds it" : parts.joined(separator: "; "))
    }

    /// Shell commands that would release each holder, in order (none for a superblock only the kernel holds).
    public var freeingCommands: [String] {
        var commands: [String] = mounts.map {
            let path = Self.shellQuoted($0.mountPoint)
            return $0.inOwnNamespace ? "umount -l \(path)" : "nsenter -t \($0.pid) -m umount -l \(path)"
        }
        commands += openFiles.map { "kill \($0.pid)" }
        commands += stackedDevices.map { "dmsetup remove \($0)" }
        commands += loops.map { "losetup -d /dev/\($0)" }
        var seen = Set<String>()
        return commands.filter { seen.insert($0).inserted }
    }

    /// A path as one shell word: as is when plain, else in single quotes (each ' as '\'').
    static func shellQuoted(_ path: String) -> String {
        let plain = !path.isEmpty && path.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || "0123456789/._-+:@%,".unicodeScalars.contains($0)) }
        return plain ? path : "'" + path.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }

    /// Everything that holds `device` (a name under /sys/class/block) right now.
    public static func find(device: String, procRoot: String = "/proc", sysRoot: String = "/sys") -> DeviceHolders {
        var found = DeviceHolders(device: device)
        let number = (try? FileIO.readValue("\(sysRoot)/class/block/\(device)/dev")).flatMap(DeviceNumber.init)
        let pids = FileIO.list(procRoot).compactMap { Int32($0) }.filter { $0 > 0 }.sorted()
        let ownNamespace = namespace(procRoot: procRoot, pid: nil, kind: "mnt")
        var namespacesSeen = Set<String>()
        let node = "/dev/\(device)"
        for pid in pids {
            if let number, let namespace = namespace(procRoot: procRoot, pid: pid, kind: "mnt"),
               namespacesSeen.insert(namespace).inserted,
               let text = try? FileIO.readText("\(procRoot)/\(pid)/mountinfo") {
                for line in text.split(separator: "\n") {
                    guard let entry = MountEntry(mountInfoLine: line), entry.deviceNumber == number else { continue }
                    found.mounts.append(MountUse(pid: pid, mountPoint: entry.mountPoint, inOwnNamespace: namespace == ownNamespace))
                }
            }
            for fdName in FileIO.list("\(procRoot)/\(pid)/fd") {
                guard let fd = Int32(fdName), readLink("\(procRoot)/\(pid)/fd/\(fdName)") == node else { continue }
                let command = (try? FileIO.readValue("\(procRoot)/\(pid)/comm")) ?? "?"
                found.openFiles.append(OpenFile(pid: pid, command: command, fd: fd))
            }
        }
        for type in FileIO.list("\(sysRoot)/fs") where FileIO.exists("\(sysRoot)/fs/\(type)/\(device)") {
            found.superblocks.append("\(sysRoot)/fs/\(type)/\(device)")
        }
        found.stackedDevices = FileIO.list("\(sysRoot)/class/block/\(device)/holders").sorted().map { holder in
            (try? FileIO.readValue("\(sysRoot)/class/block/\(holder)/dm/name")) ?? holder
        }
        for loop in FileIO.list("\(sysRoot)/block").filter({ $0.hasPrefix("loop") }).sorted() {
            if (try? FileIO.readValue("\(sysRoot)/block/\(loop)/loop/backing_file")) == node { found.loops.append(loop) }
        }
        return found
    }

    /// "mnt:[4026531841]" for /proc/PID/ns/KIND (pid nil: this process); nil when the process is gone.
    static func namespace(procRoot: String, pid: Int32?, kind: String) -> String? {
        readLink("\(procRoot)/\(pid.map(String.init) ?? "self")/ns/\(kind)")
    }

    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
