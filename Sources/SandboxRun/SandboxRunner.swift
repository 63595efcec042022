import CLinux
import Glibc
import LinuxBlock

/// What to run where.
public struct RunRequest: Sendable {
    public var sandbox: String
    /// Empty: root's login shell from the image's /etc/passwd, else /bin/sh.
    public var command: [String]
    public var binfmtDirectory = BinfmtHandlers.kernelDirectory

    public init(sandbox: String, command: [String]) {
        self.sandbox = sandbox
        self.command = command
    }
}

/// `imgsandbox run`: the command as PID 2 of a new PID namespace whose init (PID 1, this process's clone)
/// owns a new mount and UTS namespace with the sandbox as its root. When the command ends, init exits and
/// the kernel kills whatever the command left running; the namespaces go with the last of them, so nothing
/// of the run outlives it. This process stays outside, forwards signals and returns the command's status.
public enum SandboxRunner {
    /// Environment variables passed through from the caller; the rest is reset as for a login.
    static let passedVariables = ["TERM", "COLORTERM", "LANG", "LANGUAGE", "TZ", "DEBIAN_FRONTEND", "DEBCONF_NONINTERACTIVE_SEEN",
                                  "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"]
    static let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    /// Signals a user sends to `run` that go on to the command.
    static let forwarded: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT]
    /// Exit status when the sandbox could not be set up (before the command ran), as env(1) and chroot(1) do.
    public static let setupFailed: Int32 = 125

    /// Runs the command and returns its exit status (128+N when signal N killed it).
    public static func run(_ request: RunRequest) throws(RunError) -> Int32 {
        guard geteuid() == 0 else { throw RunError("run needs root (it mounts /proc, /sys and /dev for the sandbox)") }
        let location = try SandboxLocation(request.sandbox)
        let root = try location.open()
        defer { close(root.fd) }
        let (program, argv) = command(request.command, root: root)
        let verdict = try ArchitectureCheck.check(command: program, root: root, host: ELFIdentity.host(),
                                                  binfmt: BinfmtHandlers(directory: request.binfmtDirectory))
        let compat32 = switch verdict {
        case .native(_, let compat), .emulated(_, _, let compat): compat
        case .unknown: false
        }
        let hostname = imageHostname(root) ?? (validHostname(location.name) ? location.name : "sandbox")
        let environment = self.environment(shell: request.command.isEmpty ? program : nil)
        guard threadCount() == 1 else { throw RunError("internal: run must set up namespaces before any thread starts") }

        var blocked = sigset_t()
        sigemptyset(&blocked)
        for signal in forwarded + [SIGCHLD] { sigaddset(&blocked, signal) }
        var previous = sigset_t()
        sigprocmask(SIG_BLOCK, &blocked, &previous)
        fflush(nil)
        let initPID = clinux_clone_into(clinux_CLONE_NEWNS | clinux_CLONE_NEWUTS | clinux_CLONE_NEWPID)
        if initPID == 0 {
            sandboxInit(path: location.path, checked: root, hostname: hostname, compat32: compat32, program: program, argv: argv,
                        environment: environment, blocked: blocked)
        }
        guard initPID > 0 else {
            let saved = errno
            sigprocmask(SIG_SETMASK, &previous, nil)
            throw RunError(SystemError("clone", "new mount, UTS and PID namespaces", errno: saved))
        }
        let status = supervise(child: initPID, blocked: blocked)
        sigprocmask(SIG_SETMASK, &previous, nil)
        return status
    }

    /// Waits for `child`, passing on the signals users send (not those the terminal sends to the whole
    /// foreground group: the command got those itself). Returns its exit status, 128+N for signal N.
    static func supervise(child: pid_t, blocked: sigset_t) -> Int32 {
        var set = blocked
        while true {
            var info = siginfo_t()
            let signal = sigwaitinfo(&set, &info)
            if signal == SIGCHLD || signal < 0 {
                var status: Int32 = 0
                let reaped = waitpid(child, &status, WNOHANG)
                if reaped == child { return exitStatus(status) }
                if reaped < 0, errno != EINTR { return setupFailed }
                continue
            }
            if info.si_code <= 0 { kill(child, signal) }   // SI_USER, SI_QUEUE, SI_TKILL: sent by a process
        }
    }

    /// One line on stderr (fd 2) without stdio: this runs in clones of the process too.
    public static func report(_ line: String) {
        let bytes = Array(line.utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    static func exitStatus(_ status: Int32) -> Int32 {
        let termination = status & 0x7f
        if termination == 0 { return (status >> 8) & 0xff }
        return 128 + termination
    }

    /// PID 1 of the new namespaces: sets the sandbox up, starts the command, reaps every orphan, exits
    /// with the command's status. Never returns.
    static func sandboxInit(path sandboxPath: String, checked: ImageRoot, hostname: String, compat32: Bool, program: String, argv: [String],
                            environment: [String], blocked: sigset_t) -> Never {
        let root: ImageRoot
        do {
            root = try reopen(sandboxPath, as: checked)
            try SandboxRoot(root: root).setUp(hostname: hostname)
        } catch {
            report("imgsandbox run: \(error)\n")
            _exit(setupFailed)
        }
        guard fchdir(root.fd) == 0, chroot(".") == 0, chdir("/") == 0 else {
            report("imgsandbox run: chroot into the sandbox: \(String(cString: strerror(errno)))\n")
            _exit(setupFailed)
        }
        close(root.fd)
        if compat32 { _ = clinux_personality(clinux_PER_LINUX32) }
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        let command = clinux_clone_into(0)
        if command == 0 {
            // The command starts as from a fresh login: no signal blocked or ignored (whatever the caller of
            // run had blocked or ignored, e.g. a test harness's SIGPIPE, is not the command's business).
            var empty = sigset_t()
            sigemptyset(&empty)
            sigprocmask(SIG_SETMASK, &empty, nil)
            for signal in 1..<Int32(32) where signal != SIGKILL && signal != SIGSTOP { Glibc.signal(signal, SIG_DFL) }
            // execvp searches the PATH of environ: make environ the command's.
            clearenv()
            for entry in cEnv { if let entry { putenv(entry) } }
            execvp(program, cArgv)
            let saved = errno
            report("imgsandbox run: cannot execute \(program): \(String(cString: strerror(saved)))\n")
            _exit(saved == ENOENT ? 127 : 126)
        }
        guard command > 0 else {
            report("imgsandbox run: fork: \(String(cString: strerror(errno)))\n")
            _exit(setupFailed)
        }
        var set = blocked
        while true {
            var info = siginfo_t()
            let signal = sigwaitinfo(&set, &info)
            if signal == SIGCHLD || signal < 0 {
                var status: Int32 = 0
                while true {
                    let reaped = waitpid(-1, &status, WNOHANG)
                    if reaped == command { _exit(exitStatus(status)) }
                    if reaped <= 0 { break }
                }
                continue
            }
            if info.si_code <= 0 { kill(command, signal) }
        }
    }

    /// The sandbox's root as this mount namespace sees it (move_mount only targets mounts of the caller's
    /// namespace; the fd opened before the clone names the outer one), checked to be the same directory.
    static func reopen(_ path: String, as checked: ImageRoot) throws(RunError) -> ImageRoot {
        let fd = open(path, clinux_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        var now = stat(), before = stat()
        guard fd >= 0, fstat(fd, &now) == 0, fstat(checked.fd, &before) == 0 else {
            throw RunError(SystemError("open", path, errno: errno))
        }
        guard now.st_dev == before.st_dev, now.st_ino == before.st_ino else {
            close(fd)
            throw RunError("\(path) changed while run was starting")
        }
        close(checked.fd)
        return ImageRoot(fd: fd)
    }

    /// The program and its argv: the given command, or root's login shell (argv[0] "-NAME", the login convention).
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
        return (shell, ["-" + (shell.split(separator: "/").last.map(String.init) ?? "sh")])
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

    static func threadCount() -> Int {
        let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        let bytes = ImageRoot.readAll(fd, limit: 8192)
        close(fd)
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("Threads:") {
            return Int(line.dropFirst(8).trimmingPrefix { $0 == "\t" || $0 == " " }) ?? 0
        }
        return 0
    }
}
