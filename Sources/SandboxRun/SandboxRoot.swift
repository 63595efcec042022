import CLinux
import Glibc
import LinuxBlock

/// Sets up what the command sees, inside the fresh mount namespace of `run`'s init process: /proc, /sys
/// read-only, a minimal /dev, /run, the host's resolv.conf and a policy refusing service starts. Every
/// target is opened relative to the sandbox without following any symlink or crossing a mount, and every
/// mount is attached through that fd (new mount API): an image whose /dev is a symlink to /etc gets a
/// refusal, never a mount on a host path. Nothing here writes to the sandbox.
struct SandboxRoot {
    let root: ImageRoot

    static let policyScript = "#!/bin/sh\n# imgsandbox run: services are not started inside a sandbox.\nexit 101\n"

    func setUp(hostname: String) throws(RunError) {
        do {
            try systemCall("mount", "/ (private)") { clinux_mount_propagation("/", clinux_MS_REC_PRIVATE) }
            let name = Array(hostname.utf8)
            try systemCall("sethostname", hostname) { name.withUnsafeBufferPointer { clinux_sethostname($0.baseAddress, $0.count) } }
        } catch { throw RunError(error) }
        let noexec = clinux_MOUNT_ATTR_NOSUID | clinux_MOUNT_ATTR_NODEV | clinux_MOUNT_ATTR_NOEXEC
        try attach(try newMount("proc", "", noexec), at: directory("proc"), "/proc")
        try attach(try newMount("sysfs", "", noexec | clinux_MOUNT_ATTR_RDONLY), at: directory("sys"), "/sys")
        try setUpDev()
        let run = try newMount("tmpfs", "mode=0755,size=64m", clinux_MOUNT_ATTR_NOSUID | clinux_MOUNT_ATTR_NODEV)
        defer { close(run) }
        try call("mkdir /run/lock") { mkdirat(run, "lock", 0o1777) }
        try call("chmod /run/lock") { fchmodat(run, "lock", 0o1777, 0) }
        try call("mkdir /run/imgsandbox-run") { mkdirat(run, "imgsandbox-run", 0o755) }
        try attach(run, at: directory("run"), "/run")
        try bindResolvConf()
        try refuseServiceStarts(run: run)
    }

    private func setUpDev() throws(RunError) {
        let dev = try newMount("tmpfs", "mode=0755,size=1m,nr_inodes=64", clinux_MOUNT_ATTR_NOSUID | clinux_MOUNT_ATTR_NOEXEC)
        defer { close(dev) }
        for (name, major, minor) in [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)] as [(String, UInt32, UInt32)] {
            try call("mknod /dev/\(name)") { mknodat(dev, name, S_IFCHR | 0o666, dev_t(clinux_makedev(major, minor))) }
            try call("chmod /dev/\(name)") { fchmodat(dev, name, 0o666, 0) }
        }
        for (name, mode) in [("pts", 0o755), ("shm", 0o1777)] as [(String, mode_t)] {
            try call("mkdir /dev/\(name)") { mkdirat(dev, name, mode) }
        }
        for (target, name) in [("pts/ptmx", "ptmx"), ("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                               ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr")] {
            try call("symlink /dev/\(name)") { symlinkat(target, dev, name) }
        }
        try attach(dev, at: directory("dev"), "/dev")
        let tty = groupID("tty").map { ",gid=\($0)" } ?? ""
        let pts = try newMount("devpts", "newinstance,ptmxmode=0666,mode=0620\(tty)", clinux_MOUNT_ATTR_NOSUID | clinux_MOUNT_ATTR_NOEXEC)
        try attach(pts, at: try open(in: dev, "pts"), "/dev/pts")
        close(pts)
        let shm = try newMount("tmpfs", "mode=1777", clinux_MOUNT_ATTR_NOSUID | clinux_MOUNT_ATTR_NODEV)
        try attach(shm, at: try open(in: dev, "shm"), "/dev/shm")
        close(shm)
    }

    /// The host's resolv.conf (host symlinks followed: the host is trusted) over the image's entry itself,
    /// even when that is a symlink (the mount covers the link; its target, wherever it points, is untouched).
    private func bindResolvConf() throws(RunError) {
        guard root.kind("etc/resolv.conf").map({ $0 != S_IFDIR }) ?? false else { return }
        let host = clinux_open_tree(AT_FDCWD, "/etc/resolv.conf", clinux_OPEN_TREE_CLONE | clinux_OPEN_TREE_CLOEXEC)
        guard host >= 0 else { return }   // the host has none: the image's stays visible
        defer { close(host) }
        try attach(host, at: try target("etc/resolv.conf", directory: false), "/etc/resolv.conf")
    }

    /// Debian's convention: invoke-rc.d asks /usr/sbin/policy-rc.d, and 101 means "do not start". When the
    /// image has that file, ours is mounted over it; otherwise (the usual case) the image's invoke-rc.d is
    /// covered by a copy whose POLICYHELPER points at ours under /run, so no file is created in the sandbox.
    private func refuseServiceStarts(run: Int32) throws(RunError) {
        try write(run, "imgsandbox-run/policy-rc.d", Self.policyScript)
        if let kind = root.kind("usr/sbin/policy-rc.d"), kind == S_IFREG || kind == S_IFLNK {
            try bind(run, "imgsandbox-run/policy-rc.d", over: "usr/sbin/policy-rc.d")
            return
        }
        guard root.kind("usr/sbin/invoke-rc.d") == S_IFREG,
              let original = root.read("usr/sbin/invoke-rc.d", limit: 1 << 20) else { return }
        var replaced = false
        let lines = String(decoding: original, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map { line -> Substring in
            guard !replaced, line.hasPrefix("POLICYHELPER=") else { return line }
            replaced = true
            return "POLICYHELPER=/run/imgsandbox-run/policy-rc.d"
        }
        guard replaced else { return }
        try write(run, "imgsandbox-run/invoke-rc.d", lines.joined(separator: "\n"))
        try bind(run, "imgsandbox-run/invoke-rc.d", over: "usr/sbin/invoke-rc.d")
    }

    // MARK: helpers

    private func write(_ dir: Int32, _ name: String, _ text: String) throws(RunError) {
        let fd = try call("create /run/\(name)") { openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o755) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw RunError("write /run/\(name): short write") }
        try call("chmod /run/\(name)") { fchmod(fd, 0o755) }
    }

    private func bind(_ dir: Int32, _ name: String, over path: String) throws(RunError) {
        let source = try call("open_tree /run/\(name)") { clinux_open_tree(dir, name, clinux_OPEN_TREE_CLONE | clinux_OPEN_TREE_CLOEXEC) }
        defer { close(source) }
        try attach(source, at: try target(path, directory: false), "/" + path)
    }

    private func newMount(_ type: String, _ options: String, _ attributes: UInt32) throws(RunError) -> Int32 {
        try call("mount \(type)") { clinux_new_mount(type, options, attributes) }
    }

    /// move_mount of a detached mount onto an fd; closes `target`.
    private func attach(_ mount: Int32, at target: Int32, _ label: String) throws(RunError) {
        defer { close(target) }
        try call("move_mount \(label)") {
            clinux_move_mount(mount, "", target, "", clinux_MOVE_MOUNT_F_EMPTY_PATH | clinux_MOVE_MOUNT_T_EMPTY_PATH)
        }
    }

    private func directory(_ path: String) throws(RunError) -> Int32 {
        try target(path, directory: true)
    }

    /// The entry itself (O_PATH, no symlink anywhere on the way or at the end, no mount crossed).
    private func target(_ path: String, directory: Bool) throws(RunError) -> Int32 {
        do {
            let fd = try root.open(path, flags: clinux_O_PATH | O_NOFOLLOW | (directory ? O_DIRECTORY : 0), strict: true)
            return fd
        } catch {
            let why: String = switch error.errno {
            case _ where root.kind(path) == S_IFLNK: "it is a symlink, which is never followed inside an image"
            case ELOOP: "it is a symlink (or has one on its way), which is never followed inside an image"
            case ENOTDIR: "it is not a directory"
            case ENOENT: "the image has none"
            case EXDEV: "it crosses a mount"
            default: error.description
            }
            throw RunError("cannot mount on the image's /\(path): \(why)")
        }
    }

    private func open(in dir: Int32, _ name: String) throws(RunError) -> Int32 {
        try call("open /dev/\(name)") { openat(dir, name, clinux_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    }

    /// The image's gid for a group name (from its /etc/group), if it has one.
    private func groupID(_ group: String) -> UInt32? {
        guard let bytes = root.read("etc/group", limit: 1 << 20) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            if fields.count >= 3, fields[0] == Substring(group), let gid = UInt32(fields[2]) { return gid }
        }
        return nil
    }

    @discardableResult
    private func call<T: FixedWidthInteger>(_ what: String, _ body: () -> T) throws(RunError) -> T {
        do { return try systemCall(what, "in the sandbox", body) } catch { throw RunError(error) }
    }
}
