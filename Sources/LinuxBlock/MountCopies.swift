import CLinux
import Glibc

/// Copies of this process's mounts in other mount namespaces. Every unshare(CLONE_NEWNS) (unshare -m,
/// `imgsandbox run`, bwrap, nspawn, a container, a user namespace of any local user) copies the whole mount
/// table, the daemon's hidden mounts included, and with private propagation (the default here and of
/// unshare(1)) our later unmount never reaches the copy: it succeeds, while the copy keeps the filesystem
/// alive (/sys/fs/ext4/DEV stays) and its device busy (zram reset: EBUSY), invisibly when the namespace's
/// processes are chrooted (their /proc/PID/mountinfo lists nothing outside their root). The teardown
/// removes each mount point right after its unmount, which detaches the copies (Teardown+MountPoint); this
/// finds what is left, for the log line of a release that answers EBUSY.
public enum MountCopies {
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

    /// The mount table of every other mount namespace that has a process, read from that namespace's root;
    /// namespaces that end meanwhile are skipped.
    public static func mountsInOtherNamespaces(procRoot: String = "/proc") -> [NamespaceMounts] {
        guard let proc = try? FileDescriptor.open(procRoot, O_RDONLY | O_DIRECTORY) else { return [] }
        var all: [NamespaceMounts] = []
        for (namespace, pid) in otherNamespaces(procRoot: procRoot) {
            guard let namespaceFD = try? FileDescriptor.open("\(procRoot)/\(pid)/ns/mnt", O_RDONLY) else { continue }
            // The fork holds copies of our fds until it exits: an unmount in flight waits for it (SpawnGate).
            let info = SpawnGate.spawning { clinux_mountinfo_in(namespaceFD.raw, proc.raw) }
            guard info >= 0 else { continue }
            let entries = readAll(FileDescriptor(adopting: info)).split(separator: "\n").compactMap { MountEntry(mountInfoLine: $0) }
            let command = (try? FileIO.readValue("\(procRoot)/\(pid)/comm")) ?? "?"
            all.append(NamespaceMounts(namespace: namespace, pid: pid, command: command, entries: entries))
        }
        return all
    }

    static func readAll(_ fd: borrowing FileDescriptor) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd.raw, $0.baseAddress, $0.count) }
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
