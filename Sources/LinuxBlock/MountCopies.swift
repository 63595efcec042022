import CLinux
import Glibc

/// Copies of this process's mounts in other mount namespaces. Every unshare(CLONE_NEWNS) (unshare -m,
/// `imgsandbox run`, bwrap, nspawn, a container, a user namespace of any local user) copies the whole mount
/// table, the daemon's hidden mounts included, and with private propagation (the default here and of
/// unshare(1)) our later unmount never reaches the copy: it succeeds, while the copy keeps the filesystem
/// alive (/sys/fs/ext4/DEV stays) and its device busy (zram reset: EBUSY), invisibly when the namespace's
/// processes are chrooted (their /proc/PID/mountinfo lists nothing outside their root).
public enum MountCopies {
    /// One of our mounts: its path here and its filesystem's device (st_dev of its root).
    public struct Target: Sendable, Equatable {
        public let path: String
        public let device: DeviceNumber

        public init(path: String, device: DeviceNumber) {
            self.path = path
            self.device = device
        }

        /// The mount at `path` now.
        public static func mounted(at path: String) throws(SystemError) -> Target {
            var info = stat()
            try systemCall("stat", path) { stat(path, &info) }
            return Target(path: path, device: DeviceNumber(rawValue: UInt64(info.st_dev)))
        }
    }

    /// A copy of a target found in another mount namespace.
    public struct Copy: Sendable, Equatable, CustomStringConvertible {
        public let path: String
        /// A process in that namespace, and its command name.
        public let pid: Int32
        public let command: String
        /// "mnt:[4026532200]"
        public let namespace: String
        /// nil: still there; 0: lazily unmounted there; else the errno of the refused unmount.
        public var detachError: Int32?
        public var detached: Bool { detachError == 0 }

        public var description: String {
            let state = switch detachError {
            case nil: ""
            case 0: ", detached"
            case EINVAL: ", locked by the kernel (a user namespace's copy): it goes when that namespace ends"
            case let code?: ", not detached: \(SystemError.describe(code))"
            }
            return "copy of \(path) in \(namespace) of pid \(pid) (\(command))\(state)"
        }
    }

    /// Every other mount namespace that has a process, once, with the lowest pid in it.
    static func otherNamespaces(procRoot: String) -> [(namespace: String, pid: Int32)] {
        let own = readLink("\(procRoot)/self/ns/mnt")
        var seen = Set<String>()
        var found: [(String, Int32)] = []
        for pid in FileIO.list(procRoot).compactMap(Int32.init).sorted() {
            guard let namespace = readLink("\(procRoot)/\(pid)/ns/mnt"), namespace != own,
                  seen.insert(namespace).inserted else { continue }
            found.append((namespace, pid))
        }
        return found
    }

    /// The mount table of each other mount namespace, read from that namespace's root.
    public struct NamespaceMounts: Sendable {
        public let namespace: String
        public let pid: Int32
        public let command: String
        public let entries: [MountEntry]
    }

    /// Runs `body` with each other mount namespace's fd, its mounts and a procfs fd; namespaces that end
    /// meanwhile are skipped.
    static func eachOtherNamespace(procRoot: String, _ body: (Int32, Int32, NamespaceMounts) -> Void) {
        let proc = open(procRoot, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard proc >= 0 else { return }
        defer { close(proc) }
        for (namespace, pid) in otherNamespaces(procRoot: procRoot) {
            let nsFD = open("\(procRoot)/\(pid)/ns/mnt", O_RDONLY | O_CLOEXEC)
            guard nsFD >= 0 else { continue }
            defer { close(nsFD) }
            // The fork holds copies of our fds until it exits: an unmount in flight waits for it (SpawnGate).
            let info = SpawnGate.spawning { clinux_mountinfo_in(nsFD, proc) }
            guard info >= 0 else { continue }
            let entries = readAll(info).split(separator: "\n").compactMap { MountEntry(mountInfoLine: $0) }
            close(info)
            let command = (try? FileIO.readValue("\(procRoot)/\(pid)/comm")) ?? "?"
            body(nsFD, proc, NamespaceMounts(namespace: namespace, pid: pid, command: command, entries: entries))
        }
    }

    public static func mountsInOtherNamespaces(procRoot: String = "/proc") -> [NamespaceMounts] {
        var all: [NamespaceMounts] = []
        eachOtherNamespace(procRoot: procRoot) { _, _, mounts in all.append(mounts) }
        return all
    }

    /// Finds the copies of `targets` in every other mount namespace; with `detach`, lazily unmounts each
    /// there (resolved without following symlinks, and checked to be a mount of the target's device).
    public static func find(_ targets: [Target], detach: Bool, procRoot: String = "/proc") -> [Copy] {
        guard !targets.isEmpty else { return [] }
        var copies: [Copy] = []
        eachOtherNamespace(procRoot: procRoot) { nsFD, proc, mounts in
            for target in targets where mounts.entries.contains(where: { $0.mountPoint == target.path && $0.deviceNumber == target.device }) {
                var copy = Copy(path: target.path, pid: mounts.pid, command: mounts.command, namespace: mounts.namespace)
                if detach {
                    // 0 (no such mount there any more) counts as gone too.
                    copy.detachError = SpawnGate.spawning {
                        clinux_detach_in(nsFD, proc, target.path, target.device.rawValue) >= 0 ? 0 : Glibc.errno
                    }
                }
                copies.append(copy)
            }
        }
        return copies
    }

    /// Detaches every copy of `targets` in other namespaces. Throws EBUSY naming the copies that stay.
    public static func release(_ targets: [Target], procRoot: String = "/proc") throws(SystemError) {
        let kept = find(targets, detach: true, procRoot: procRoot).filter { !$0.detached }
        guard kept.isEmpty else {
            throw SystemError("kept:", kept.map(\.description).joined(separator: "; "), errno: EBUSY)
        }
    }

    static func readAll(_ fd: Int32) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
