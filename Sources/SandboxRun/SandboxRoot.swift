import CLinux
import Glibc
import LinuxBlock

/// What the command sees, as bubblewrap arguments: the sandbox as "/" (bound from our checked fd, so the
/// path cannot be swapped), its own /proc with the kernel-wide entries read-only, the host's /sys
/// read-only, bwrap's minimal /dev (null zero full random urandom tty, a devpts instance, shm), /run as
/// a tmpfs, the host's resolv.conf and a policy refusing service starts. Every place bwrap mounts on is
/// first checked inside the image without following any symlink or crossing a mount: an image whose
/// /dev is a symlink to /etc gets a refusal, never a mount on another path. Nothing here writes to the sandbox.
struct SandboxRoot {
    let root: ImageRoot

    static let policyScript = "#!/bin/sh\n# imgsandbox run: services are not started inside a sandbox.\nexit 101\n"

    /// Adds the mounts to `bwrap`; the memfds it passes are returned for the caller to close after the spawn.
    func addMounts(to bwrap: inout Bubblewrap, confined: Bool) throws(RunError) -> DescriptorSet {
        var owned = DescriptorSet()
        for directory in ["proc", "sys", "dev", "run"] { try check(directory, directory: true) }
        bwrap.add("--bind-fd", bwrap.pass(root.fd), "/")
        bwrap.addProc(kernelWideReadOnly: confined)
        bwrap.add("--ro-bind", "/sys", "/sys")
        for path in ConfinementPolicy.maskedSys where Self.isMountPoint("/sys/\(path)") {
            bwrap.add("--tmpfs", "/sys/\(path)", "--remount-ro", "/sys/\(path)")
        }
        bwrap.add("--dev", "/dev")
        bwrap.add("--perms", "0755", "--tmpfs", "/run", "--perms", "01777", "--dir", "/run/lock")
        if access("/etc/resolv.conf", R_OK) == 0, let place = resolvConfPlace() {
            bwrap.add("--ro-bind", "/etc/resolv.conf", place)
        }
        try refuseServiceStarts(&bwrap, &owned)
        return owned
    }

    /// Where the host's resolv.conf goes: over the image's when that is a regular file; when it is a
    /// symlink into /run (systemd-resolved's stub-resolv.conf, resolvconf), at its target inside run's
    /// own /run tmpfs, where nothing of the image can redirect it. Any other symlink is left alone.
    func resolvConfPlace() -> String? {
        switch root.kind("etc/resolv.conf") {
        case S_IFREG: return "/etc/resolv.conf"
        case S_IFLNK:
            guard let etc = try? root.open("etc", flags: clinux_O_PATH | O_DIRECTORY | O_NOFOLLOW, strict: true) else { return nil }
            var target = [CChar](repeating: 0, count: 4096)
            let length = readlinkat(etc.raw, "resolv.conf", &target, target.count)
            guard length > 0, length < target.count else { return nil }
            let text = String(decoding: target[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return Self.underRun(text.hasPrefix("/") ? text : "/etc/" + text)
        default: return nil
        }
    }

    /// `path` with `.` and `..` resolved lexically, if it then lies strictly below /run.
    static func underRun(_ path: String) -> String? {
        var parts: [Substring] = []
        for part in path.split(separator: "/") where part != "." {
            if part == ".." { _ = parts.popLast() } else { parts.append(part) }
        }
        guard parts.count >= 2, parts[0] == "run", parts[1] != "imgsandbox-run" else { return nil }
        return "/" + parts.joined(separator: "/")
    }

    /// Debian's convention: invoke-rc.d asks /usr/sbin/policy-rc.d, and 101 means "do not start". When the
    /// image has that file, ours is mounted over it; otherwise (the usual case) the image's invoke-rc.d is
    /// covered by a copy whose POLICYHELPER points at ours under /run, so no file is created in the sandbox.
    private func refuseServiceStarts(_ bwrap: inout Bubblewrap, _ owned: inout DescriptorSet) throws(RunError) {
        let policy = owned.insert(try memfd(Self.policyScript))
        bwrap.add("--perms", "0755", "--ro-bind-data", bwrap.pass(policy), "/run/imgsandbox-run/policy-rc.d")
        if root.kind("usr/sbin/policy-rc.d") == S_IFREG {
            let over = owned.insert(try memfd(Self.policyScript))   // bwrap reads each fd once
            bwrap.add("--perms", "0755", "--ro-bind-data", bwrap.pass(over), "/usr/sbin/policy-rc.d")
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
        let copy = owned.insert(try memfd(lines.joined(separator: "\n")))
        bwrap.add("--perms", "0755", "--ro-bind-data", bwrap.pass(copy), "/usr/sbin/invoke-rc.d")
    }

    private func memfd(_ text: String) throws(RunError) -> FileDescriptor {
        let bytes = Array(text.utf8)
        let fd = bytes.withUnsafeBytes { clinux_memfd_with("imgsandbox-run", $0.baseAddress, $0.count) }
        guard fd >= 0 else { throw RunError(SystemError("memfd_create", "imgsandbox-run", errno: errno)) }
        return FileDescriptor(adopting: fd)
    }

    /// A host path that is a mount point (its device differs from its parent's).
    static func isMountPoint(_ path: String) -> Bool {
        var info = stat(), parent = stat()
        return lstat(path, &info) == 0 && lstat(path + "/..", &parent) == 0 && info.st_dev != parent.st_dev
    }

    /// The entry itself must exist with the right kind, reachable with no symlink anywhere on the way or
    /// at the end, and without crossing a mount.
    private func check(_ path: String, directory: Bool) throws(RunError) {
        do {
            _ = try root.open(path, flags: clinux_O_PATH | O_NOFOLLOW | (directory ? O_DIRECTORY : 0), strict: true)
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
}
