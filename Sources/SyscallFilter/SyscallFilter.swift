import CLinux
import CSeccomp
import Glibc
import LinuxBlock

/// The seccomp program bubblewrap loads for what imgsandbox confines (`run`'s commands, the cache's
/// qemu-img): system calls that reach past the sandbox into the kernel or the host fail with EPERM
/// (systemd-nspawn's default list refuses these too). It is compiled by libseccomp for the host's
/// architecture and its 32-bit siblings (a 32-bit system call must not slip past a 64-bit filter), so
/// qemu-user's translated calls meet it as well.
public enum SyscallFilter {
    public static let denied = [
        // Replacing or stopping the kernel.
        "kexec_load", "kexec_file_load", "reboot",
        // Kernel modules.
        "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
        // Opening any file of a filesystem by handle bypasses every mount and path (the classic escape).
        "open_by_handle_at", "name_to_handle_at",
        // Swap, the kernel keyring (not namespaced), eBPF, perf.
        "swapon", "swapoff", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
        // Mounts, old and new API: the run's file system view is fixed.
        "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
        "open_tree", "mount_setattr",
        // The host's clock.
        "settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64", "adjtimex",
        // Raw I/O, the kernel log, accounting, quotas and obsolete calls.
        "ioperm", "iopl", "pciconfig_iobase", "pciconfig_read", "pciconfig_write", "syslog", "acct", "quotactl",
        "quotactl_fd", "lookup_dcookie", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "vhangup",
    ]

    /// The BPF program in a memfd (offset 0) for bubblewrap's --seccomp, or the reason it could not be made.
    public static func program() throws(SyscallFilterError) -> FileDescriptor {
        guard let context = seccomp_init(cseccomp_action_allow()) else { throw SyscallFilterError("seccomp_init failed") }
        defer { seccomp_release(context) }
        for arch in siblingArchitectures() {
            let rc = seccomp_arch_add(context, arch)
            guard rc == 0 || rc == -EEXIST else { throw SyscallFilterError("seccomp_arch_add: \(String(cString: strerror(-rc)))") }
        }
        for name in denied {
            let number = seccomp_syscall_resolve_name(name)
            guard number != __NR_SCMP_ERROR else { continue }   // not a system call of this architecture
            let rc = seccomp_rule_add_array(context, cseccomp_action_errno(UInt16(EPERM)), number, 0, nil)
            guard rc == 0 else { throw SyscallFilterError("seccomp rule for \(name): \(String(cString: strerror(-rc)))") }
        }
        try denyNewUserNamespaces(context)
        let raw = clinux_memfd_with("imgsandbox-seccomp", nil, 0)
        guard raw >= 0 else { throw SyscallFilterError("memfd_create: \(String(cString: strerror(errno)))") }
        let fd = FileDescriptor(adopting: raw)
        let rc = seccomp_export_bpf(context, fd.raw)
        guard rc == 0, lseek(fd.raw, 0, SEEK_SET) == 0 else {
            throw SyscallFilterError("seccomp_export_bpf: \(String(cString: strerror(rc < 0 ? -rc : errno)))")
        }
        return fd
    }

    /// CLONE_NEWUSER (linux/sched.h).
    static let newUserNamespace: UInt64 = 0x1000_0000

    /// No new user namespaces: in one, a process holds every capability over what it owns there (mounts of
    /// some filesystems, netfilter, ...), kernel code that root without CAP_SYS_ADMIN never reaches here.
    /// Docker's default profile and bubblewrap's --disable-userns (which needs a user namespace of its own)
    /// refuse them; systemd-nspawn's default allows them (@process). unshare and clone with the flag get
    /// EPERM; clone3, whose flags lie in memory a filter cannot read, gets ENOSYS, on which glibc and
    /// others fall back to clone. Arguments as on x86 and ARM: the flags are clone's first.
    static func denyNewUserNamespaces(_ context: scmp_filter_ctx) throws(SyscallFilterError) {
        for name in ["unshare", "clone"] {
            let rc = cseccomp_rule_flags_set(context, cseccomp_action_errno(UInt16(EPERM)),
                                             seccomp_syscall_resolve_name(name), 0, newUserNamespace)
            guard rc == 0 else { throw SyscallFilterError("seccomp rule for \(name): \(String(cString: strerror(-rc)))") }
        }
        let clone3 = seccomp_syscall_resolve_name("clone3")
        guard clone3 != __NR_SCMP_ERROR else { return }
        let rc = seccomp_rule_add_array(context, cseccomp_action_errno(UInt16(ENOSYS)), clone3, 0, nil)
        guard rc == 0 else { throw SyscallFilterError("seccomp rule for clone3: \(String(cString: strerror(-rc)))") }
    }

    /// The 32-bit ABIs this kernel also accepts system calls in (the machine uname(2) names).
    static func siblingArchitectures() -> [UInt32] {
        var names = utsname()
        uname(&names)
        let machine = withUnsafeBytes(of: &names.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch machine {
        case "x86_64": return [cseccomp_arch_x86(), cseccomp_arch_x32()]
        case "aarch64": return [cseccomp_arch_arm()]
        default: return []
        }
    }
}

/// Why the program could not be made (a libseccomp or memfd call, with its error).
public struct SyscallFilterError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
