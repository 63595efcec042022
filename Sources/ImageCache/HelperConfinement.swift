import Glibc
import LinuxBlock

/// qemu-img parses untrusted disk headers (qcow2, vmdk, vdi, vhdx, vhd) as root, so it runs in bubblewrap:
/// new namespaces (mounts, PIDs, network: none, IPC, UTS, cgroup), no_new_privs, every capability
/// dropped but CAP_DAC_OVERRIDE, run's system call filter (SyscallFilter: no kernel modules, kexec,
/// mounts, keyrings, bpf, open_by_handle_at, new user namespaces...), and a view of /usr read-only, its
/// own /proc (kernel-wide entries read-only) and bwrap's minimal /dev: no host file is there to open.
/// What it reads and writes it gets as fds 3, 4 (HelperProcess), which it reopens as /proc/self/fd/N.
/// CAP_DAC_OVERRIDE: that reopen checks the file's mode again, and an image may belong to another user
/// with mode 0600; in this view nothing else it could reach is writable by it.
enum HelperConfinement {
    static let missing = "VM disk images are converted by qemu-img inside bubblewrap: apt-get install bubblewrap"

    /// The bwrap command line that runs `argv` (found in /usr) confined, loading the seccomp program bwrap
    /// gets as fd `filterFD`; nil when bwrap is not installed.
    static func command(_ argv: [String], filterFD: Int) -> [String]? {
        guard let program = Bubblewrap.installedPath else { return nil }
        var bwrap = Bubblewrap()
        bwrap.add("--seccomp", String(filterFD))
        bwrap.add("--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--cap-add", "CAP_DAC_OVERRIDE")
        bwrap.add("--ro-bind", "/usr", "/usr")
        // Merged /usr (Debian since 12): /bin, /lib ... are links into it; otherwise bound themselves.
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            var target = [CChar](repeating: 0, count: 256)
            let length = readlink("/\(top)", &target, target.count - 1)
            if length > 0 {
                bwrap.add("--symlink", String(cString: target), "/\(top)")
            } else if access("/\(top)", F_OK) == 0 {
                bwrap.add("--ro-bind", "/\(top)", "/\(top)")
            }
        }
        bwrap.addProc(kernelWideReadOnly: true)
        bwrap.add("--dev", "/dev", "--chdir", "/", "--")
        return [program] + bwrap.arguments + argv
    }
}
