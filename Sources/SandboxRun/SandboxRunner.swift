import CLinux
import Glibc
import LinuxBlock

/// What to run where.
public struct RunRequest: Sendable {
    public var sandbox: String
    /// Empty: root's login shell from the image's /etc/passwd, else /bin/sh.
    public var command: [String]
    public var network = RunNetwork.host
    /// The image's code is trusted: all of root's capabilities, no system call filter, writable /proc/sys.
    public var privileged = false
    public var binfmtDirectory = BinfmtHandlers.kernelDirectory

    public init(sandbox: String, command: [String]) {
        self.sandbox = sandbox
        self.command = command
    }
}

/// `imgsandbox run`: the command under bubblewrap, with the sandbox as its root (pivot_root, the old
/// root detached) in new PID, mount, IPC and UTS namespaces (and network, with `--network none`),
/// confined by ConfinementPolicy. bwrap's PID 1 exits with the command, and the kernel then kills
/// whatever the command left running, so nothing of the run outlives it. This process stays outside:
/// it relays a terminal, passes signals on and returns the command's status.
public enum SandboxRunner {
    /// Environment variables passed through from the caller; the rest is reset as for a login.
    static let passedVariables = ["TERM", "COLORTERM", "LANG", "LANGUAGE", "TZ", "DEBIAN_FRONTEND", "DEBCONF_NONINTERACTIVE_SEEN",
                                  "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"]
    static let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    /// Exit status when the sandbox could not be set up (before the command ran), as env(1) and chroot(1) do.
    public static let setupFailed: Int32 = 125

    /// Runs the command and returns its exit status (128+N when signal N killed it).
    public static func run(_ request: RunRequest) throws(RunError) -> Int32 {
        guard geteuid() == 0 else { throw RunError("run needs root (it mounts /proc, /sys and /dev for the sandbox)") }
        let location = try SandboxLocation(request.sandbox)
        let root = try location.open()
        let (program, argv) = command(request.command, root: root)
        let verdict = try ArchitectureCheck.check(command: program, root: root, host: ELFIdentity.host(),
                                                  binfmt: BinfmtHandlers(directory: request.binfmtDirectory))
        let compat32 = switch verdict {
        case .native(_, let compat), .emulated(_, _, let compat): compat
        case .unknown: false
        }
        let hostname = imageHostname(root) ?? (validHostname(location.name) ? location.name : "sandbox")

        var bwrap = Bubblewrap()
        bwrap.add("--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", hostname)
        if request.network == .none { bwrap.add("--unshare-net") }
        var owned = try SandboxRoot(root: root).addMounts(to: &bwrap, confined: !request.privileged)
        guard ArchitectureCheck.findable(program, in: root) else {
            report(RunError("cannot execute \(program): No such file or directory").line)
            return 127
        }
        if request.privileged {
            bwrap.add("--cap-add", "ALL")
        } else {
            try ConfinementPolicy.addCapabilitiesAndFilter(to: &bwrap, owned: &owned)
        }
        let relay = try TerminalRelay.ifInteractive()
        let status = try StatusPipe()
        bwrap.add("--json-status-fd", bwrap.pass(status.writeEndNumber))
        bwrap.add("--chdir", "/", "--")
        bwrap.arguments += argv

        if !request.privileged { try ConfinementPolicy.narrowBoundingSet() }
        if compat32 { _ = clinux_personality(clinux_PER_LINUX32) }   // inherited by bwrap and the command
        let supervisor = RunSupervisor(relay: relay, status: status)
        try supervisor.blockSignals()
        let pid: pid_t
        do {
            pid = try bwrap.spawn(environment: environment(shell: request.command.isEmpty ? program : nil),
                                  terminal: relay?.slavePath, onTerminal: relay?.replaced ?? [])
        } catch {
            supervisor.unblockSignals()
            throw error
        }
        status.closeWriteEnd()
        owned.closeAll()
        return supervisor.supervise(bwrap: pid)
    }

    /// One line on stderr (fd 2) without stdio.
    public static func report(_ line: String) {
        let bytes = Array(line.utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    static func exitStatus(_ status: Int32) -> Int32 {
        let termination = status & 0x7f
        if termination == 0 { return (status >> 8) & 0xff }
        return 128 + termination
    }

    /// The program and its argv: the given command, or root's login shell started as one (-l: bwrap
    /// cannot set the "-NAME" argv[0] of the login convention; bash, dash and busybox sh all take -l).
    static func command(_ given: [String], root: ImageRoot) -> (String, [String]) {
        if let first = given.first { return (first, given) }
        var shell = "/bin/sh"
        if let passwd = root.read("etc/passwd", limit: 1 << 20) {
            for line in String(decoding: passwd, as: UTF8.self).split(separator: "\n") {
                let fields = line.split(separator: ":", omittingEmptySubsequences: false)
                if fields.count >= 7, fields[0] == "root", fields[6].hasPrefix("/"), root.read(String(fields[6]), limit: 1) != nil {
                    shell = String(fields[6])
                    break
                }
            }
        }
        return (shell, [shell, "-l"])
    }

    static func environment(shell: String?) -> [String] {
        var result = ["HOME=/root", "USER=root", "LOGNAME=root", "PATH=\(path)"]
        if let shell { result.append("SHELL=\(shell)") }
        for name in passedVariables {
            if let value = getenv(name) { result.append("\(name)=\(String(cString: value))") }
        }
        var index = 0
        while let entry = clinux_environ()[index] {
            let text = String(cString: entry)
            if text.hasPrefix("LC_") { result.append(text) }
            index += 1
        }
        return result
    }

    /// The image's /etc/hostname when it is a valid host name.
    static func imageHostname(_ root: ImageRoot) -> String? {
        guard let bytes = root.read("etc/hostname", limit: 256) else { return nil }
        let name = String(decoding: bytes.prefix { $0 != 0x0a && $0 != 0x20 && $0 != 0x09 }, as: UTF8.self)
        return validHostname(name) ? name : nil
    }

    static func validHostname(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy { $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || (0x30...0x39).contains($0)
                  || (0x41...0x5a).contains($0) || (0x61...0x7a).contains($0) }
    }
}
