import CLinux
import Glibc
import LinuxBlock
import SyscallFilter

/// What `run` leaves root code from an image, written down in one place (docs/SECURITY.md explains it).
/// bubblewrap applies it; `--privileged` skips the capability, seccomp and /proc parts.
enum ConfinementPolicy {
    /// The capability bounding set of a confined run: what apt, dpkg, adduser, su, runuser and
    /// maintainer scripts use. Everything else is gone for good (no exec brings it back), among them
    /// SYS_ADMIN, SYS_MODULE, SYS_RAWIO, SYS_BOOT, SYS_TIME, SYSLOG, MKNOD, NET_ADMIN, SYS_PTRACE,
    /// MAC_ADMIN, BPF, PERFMON and DAC_READ_SEARCH (open_by_handle_at).
    static let keptCapabilities: [(name: String, number: Int)] = [
        ("CAP_CHOWN", 0), ("CAP_DAC_OVERRIDE", 1), ("CAP_FOWNER", 3), ("CAP_FSETID", 4), ("CAP_KILL", 5),
        ("CAP_SETGID", 6), ("CAP_SETUID", 7), ("CAP_SETPCAP", 8), ("CAP_NET_BIND_SERVICE", 10),
        ("CAP_NET_BROADCAST", 11), ("CAP_NET_RAW", 13), ("CAP_IPC_LOCK", 14), ("CAP_IPC_OWNER", 15),
        ("CAP_SYS_CHROOT", 18), ("CAP_SYS_NICE", 23), ("CAP_SYS_RESOURCE", 24), ("CAP_LEASE", 28),
        ("CAP_AUDIT_WRITE", 29), ("CAP_SETFCAP", 31),
    ]
    /// What bubblewrap itself needs on top, to build the sandbox (mounts, pivot_root, the loopback of a
    /// new network namespace); it drops them before the command starts.
    static let setupCapabilities = [21 /* CAP_SYS_ADMIN */, 12 /* CAP_NET_ADMIN */]

    static func mask(_ numbers: [Int]) -> UInt64 { numbers.reduce(0) { $0 | (1 << UInt64($1)) } }

    /// bwrap's options for the command's capabilities and its seccomp program; the program's fd joins
    /// `owned`, for the caller to close once bwrap is started.
    static func addCapabilitiesAndFilter(to bwrap: inout Bubblewrap, owned: inout DescriptorSet) throws(RunError) {
        let program: FileDescriptor
        do throws(SyscallFilterError) { program = try SyscallFilter.program() } catch { throw RunError(error.description) }
        let filter = owned.insert(program)
        bwrap.add("--seccomp", bwrap.pass(filter), "--cap-drop", "ALL")
        // Only those root has here: bwrap ignores a capset that fails (EPERM for a capability the
        // process lacks, CAP_SYS_RESOURCE in some containers) and would then leave the command every one.
        let permitted = clinux_permitted_capabilities()
        for capability in keptCapabilities where permitted & (1 << UInt64(capability.number)) != 0 {
            bwrap.add("--cap-add", capability.name)
        }
    }

    /// bwrap, started as root, keeps the bounding set it inherits for everything it starts (it narrows
    /// only the other sets): so this process narrows its own just before starting bwrap, handing bwrap
    /// what it needs for setup through the inheritable set instead.
    static func narrowBoundingSet() throws(RunError) {
        let kept = mask(keptCapabilities.map(\.number))
        guard clinux_narrow_capabilities(kept, kept | mask(setupCapabilities)) == 0 else {
            throw RunError(SystemError("capset", "the capability bounding set", errno: errno))
        }
    }

    /// Mounts under the host's /sys (bound read-only into the run) that would still say too much or act:
    /// each is covered by an empty read-only tmpfs. fusectl is how a root process aborts FUSE connections.
    static let maskedSys = ["fs/fuse/connections", "kernel/debug", "kernel/tracing", "kernel/security", "fs/bpf"]
}

/// `run --network`: the host's network (what apt needs), or none (only a loopback of its own).
public enum RunNetwork: String, Sendable, CaseIterable {
    case host, none
}
