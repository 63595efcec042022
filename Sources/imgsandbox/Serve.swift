import ArgumentParser
import CLinux
import Dispatch
import FoundationEssentials
import Glibc
import ImageCache
import LinuxBlock
import Logging
import PrintableText
import Sandbox
import SandboxFS

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show each IMAGES_DIR/NAME.img as MOUNTPOINT/NAME/; mkdir NAME/sandboxes/X makes a sandbox.",
        discussion: "Returns once the filesystem is live and keeps serving in the background (--foreground stays attached). Unmounting, SIGTERM or SIGINT tear every sandbox down.")

    @Argument(help: "Folder of NAME.img files (default ./images; a demo image is made there when it has none).")
    var imagesDirectory: String?
    @Argument(help: "Where to mount (default ./mnt).")
    var mountpoint: String?

    @Option(help: "auto (dm when device-mapper is usable, else overlay), dm or overlay.")
    var engine: String = "auto"
    @Option(help: "RAM budget of each sandbox's COW store: 512M, 5G or bytes.")
    var cowSize: String = "512M"
    @Option(help: "dm engine: let each sandbox's COW store grow online, a --cow-size step at a time, up to this size (default: no growth).")
    var cowMax: String?
    @Option(help: "dm-snapshot chunk size.")
    var chunkSize: String = "8K"
    @Option(help: "How far the root filesystem is enlarged (default: by --cow-max, else by --cow-size, so the COW budget can be filled).")
    var grow: String?
    @Option(help: ArgumentHelp("Root partition: N for every image, NAME=N for image NAME (repeatable). Default: what the image boots (root= in cmdline.txt, extlinux.conf, grub.cfg, uEnv.txt, boot.scr), else the largest partition holding a Linux filesystem.", valueName: "[NAME=]N"))
    var partition: [String] = []
    @Option(help: "Where compressed, archived and VM-disk images are made raw (one sparse file per image, reused while the file is unchanged).")
    var cacheDir: String = "/var/cache/imgsandbox"
    @Option(help: "Most disk space the cache may take: 20G or bytes (default: no limit but the disk). Unused images are evicted least recently used first.")
    var cacheMax: String?
    @Flag(help: "Keep the mount to root alone (without it, every user may enter, with the kernel's permission checks).")
    var `private` = false
    @Option(help: "Let this group's members (a name or a gid) enter MOUNTPOINT besides root: the directories above the sandboxes are then 0750 root:GROUP instead of 0700 root:root. Inside a sandbox the image's own modes apply.")
    var group: String?
    @Flag(help: .hidden)   // the default now (FUSE allow_other); accepted for older command lines
    var allowOther = false
    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"
    @Flag(help: "Stay attached to the terminal (for systemd).")
    var foreground = false
    @Flag(help: .hidden)
    var daemonChild = false
    /// From the mount form's -o ro, noexec, noatime ... (MountCommandLine.kernelFlags).
    @Option(name: .customLong("kernel-flag"), help: .hidden)
    var kernelFlags: [String] = []

    func validate() throws {
        guard EngineKind(rawValue: engine) != nil else { throw ValidationError("--engine must be auto, dm or overlay") }
        for (name, value) in [("--cow-size", cowSize), ("--chunk-size", chunkSize), ("--grow", grow ?? "0"),
                              ("--cow-max", cowMax ?? "0"), ("--cache-max", cacheMax ?? "0")] {
            guard ByteSize.parse(value) != nil else { throw ValidationError("\(name) \(value): expected a size like 512M, 5G or bytes") }
        }
        guard let chunk = ByteSize.parse(chunkSize), chunk >= 4096, chunk.nonzeroBitCount == 1, chunk <= 1 << 20 else {
            throw ValidationError("--chunk-size must be a power of two between 4K and 1M")
        }
        if let cowMax, let maximum = ByteSize.parse(cowMax), let size = ByteSize.parse(cowSize), maximum < size {
            throw ValidationError("--cow-max \(cowMax) is below --cow-size \(cowSize)")
        }
        if `private`, allowOther { throw ValidationError("--private and --allow-other contradict each other") }
        if `private`, group != nil { throw ValidationError("--private and --group contradict each other (--private keeps the mount to root)") }
        if let group, Self.groupID(group) == nil { throw ValidationError("--group \(PathText.escape(group)): no such group") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        _ = try Self.partitionChoices(partition)
        for flag in kernelFlags where !MountCommandLine.kernelFlags.contains(flag) {
            throw ValidationError("unknown mount flag \(flag)")
        }
        guard getuid() == 0 || geteuid() == 0 else { throw ValidationError("serve needs root (loop, zram and mounts)") }
    }

    var settings: SandboxSettings {
        var settings = SandboxSettings()
        settings.cowSize = ByteSize.parse(cowSize) ?? settings.cowSize
        settings.chunkSize = ByteSize.parse(chunkSize) ?? settings.chunkSize
        settings.grow = grow.flatMap(ByteSize.parse)
        settings.cowMax = cowMax.flatMap(ByteSize.parse)
        if let (every, byImage) = try? Self.partitionChoices(partition) {
            settings.partition = every
            settings.partitionByImage = byImage
        }
        return settings
    }

    /// `--partition N` (at most once) and `--partition NAME=N` (once per NAME); N is 0 or more.
    static func partitionChoices(_ values: [String]) throws -> (every: Int?, byImage: [String: Int]) {
        var every: Int?, byImage: [String: Int] = [:]
        for value in values {
            let parts = value.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let number = parts.last.flatMap({ Int($0) }), number >= 0 else {
                throw ValidationError("--partition \(value): expected N or NAME=N with N a partition number (0 or more)")
            }
            if parts.count == 1 {
                guard every == nil else { throw ValidationError("--partition N is given twice (use NAME=N for one image)") }
                every = number
            } else {
                let name = String(parts[0])
                guard !name.isEmpty, !name.contains("/") else { throw ValidationError("--partition \(value): NAME must be an image name") }
                guard byImage[name] == nil else { throw ValidationError("--partition \(name)=... is given twice") }
                byImage[name] = number
            }
        }
        return (every, byImage)
    }

    func run() throws {
        // Before any thread starts: FUSE workers allocate the node table, and with malloc's arena per thread
        // what a forgotten tree leaves is scattered where malloc_trim cannot return it (100,000 lookups,
        // forgotten: RSS 54 -> 30 MiB with the default arenas, -> 24 MiB with one; idle is 22).
        mallopt(M_ARENA_MAX, 1)
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return EscapingLogHandler(inner: handler)
        }
        // Before the mountpoint is looked at: a crashed instance's dead FUSE mount there answers ENOTCONN.
        if !daemonChild { InstanceRun.sweepStale(logger: Logger(label: "imgsandbox")) }
        let imagesDirectory = try Self.absoluteDirectory(imagesDirectory ?? "images", create: self.imagesDirectory == nil)
        let mountpoint = try Self.absoluteDirectory(mountpoint ?? "mnt", create: self.mountpoint == nil)
        if self.imagesDirectory == nil { try DemoImage.ensure(in: imagesDirectory) }
        // Dead instances' mounts are gone (swept above): one still there belongs to a live daemon, and a
        // second FUSE mount stacked on it would hide it.
        if let live = Mount.mountPoints().first(where: { $0.mountPoint == mountpoint && $0.type == InstanceNames.fuseType }) {
            throw ValidationFailure("\(mountpoint) is already served by \(live.source) (stop it with: umount \(mountpoint))")
        }
        if !foreground && !daemonChild {
            try Daemon.startInBackground()
            return
        }
        guard daemonChild else { return try serve(imagesDirectory: imagesDirectory, mountpoint: mountpoint) }
        setsid()
        do {
            try serve(imagesDirectory: imagesDirectory, mountpoint: mountpoint)
        } catch {
            Daemon.reportFailure(error)
            throw error
        }
    }

    private func serve(imagesDirectory: String, mountpoint: String) throws {
        let names = InstanceNames(pid: getpid())
        var logger = Logger(label: "imgsandbox")
        logger[metadataKey: "instance"] = "\(names.pid)"
        let choice = EngineChoice.choose(EngineKind(rawValue: engine) ?? .auto)
        logger.info("engine \(choice.kind.rawValue): \(choice.reason)")
        if choice.kind == .dm { EngineChoice.loadModules() }

        if settings.cowMax != nil, choice.kind != .dm {
            logger.notice("--cow-max applies to dm stores and FAT partitions only; \(choice.kind.rawValue) root and Linux partition stores keep --cow-size")
        }

        try RunDirectory.createRoot()
        // Recorded before any kernel object exists, so a sweep after a crash can tell this instance is gone.
        try InstanceRun.recordProcess(names)
        let engine = try choice.makeEngine(names: names)
        let cacheDirectory = URL(fileURLWithPath: cacheDir).standardizedFileURL.path
        let imageCache = ImageCache(directory: cacheDirectory, maxBytes: cacheMax.flatMap(ByteSize.parse), logger: logger,
                                    hooks: TestSeams.cacheHooks(ProcessInfo.processInfo.environment, logger: logger))
        let manager = try SandboxManager(imagesDirectory: imagesDirectory, names: names, engine: engine,
                                         settings: settings, logger: logger, imageCache: imageCache)
        var options = FileSystemOptions()
        options.allowOther = !`private`
        options.accessGroup = group.flatMap(Self.groupID)
        options.kernelFlags = kernelFlags
        // Passthrough backing files sit on overlayfs (one level of stacking) or directly on ext4/xfs/btrfs.
        options.backingStackDepth = choice.kind == .overlay ? 1 : 0
        // Every open file of every sandbox is an fd of this process, and the handle cache keeps more: take
        // the whole hard limit (the soft one is often 1,024), and let the cache use at most a quarter of it.
        let fdLimit = Self.raiseOpenFileLimit()
        options.handleCacheCapacity = min(options.handleCacheCapacity, max(64, fdLimit / 4))
        FuseKnobs.apply(ProcessInfo.processInfo.environment, to: &options)
        // The pid in the fsname lets a later sweep find this mount if the daemon dies.
        options.fsName = names.fsName
        let fileSystem = SandboxFileSystem(provider: manager, options: options, logger: logger)
        do {
            try fileSystem.mount(at: mountpoint)
        } catch {
            if manager.shutdown().isEmpty { InstanceRun.removeRecords(names) }
            throw ValidationFailure("cannot mount on \(mountpoint): \(error)")
        }
        manager.startCowWatcher()
        try InstanceRecord(pid: names.pid, mountpoint: mountpoint).write(names)
        let handler = ControlHandler(manager: manager, mountpoint: mountpoint, dataPath: { fileSystem.dataPath.rawValue },
                                     fuseRequests: { fileSystem.fuseRequestCounts })
        let control = try ControlSocket(path: names.controlSocket) { handler.handle($0, send: $1) }
        control.start()
        // Before anyone is told we are serving: a SIGTERM right after "ready" must tear down, not kill.
        // A mkdir waiting for an image's preparation holds a FUSE worker the loop must join: cancel it first.
        let signalSources = Self.exitOnSignals {
            manager.cancelPreparations()
            fileSystem.exit()
        }
        logger.info("serving \(imagesDirectory) on \(mountpoint)")
        if daemonChild { Daemon.reportReady() }
        SystemdNotify.send("READY=1\nSTATUS=serving \(imagesDirectory) on \(mountpoint)", logger: logger)

        _ = fileSystem.run()
        signalSources.forEach { $0.cancel() }
        SystemdNotify.send("STOPPING=1\nSTATUS=tearing every sandbox down", logger: logger)

        logger.info("unmounted; tearing every sandbox down")
        fileSystem.unmount()
        control.stop()
        for ref in manager.readySandboxes() { fileSystem.forgetSandbox(serial: ref.serial) }
        fileSystem.forgetPristine()
        let failures = manager.shutdown()
        for failure in failures { logger.error("teardown: \(failure)") }
        unlink(names.instanceRecord)
        // With failures the records stay: the next serve's sweep releases what is left.
        if failures.isEmpty { InstanceRun.removeRecords(names) }
        if !failures.isEmpty { throw ExitCode.failure }
    }

    /// SIGTERM, SIGINT and SIGHUP end the session like an unmount. Handled on a dispatch queue, not in a
    /// signal handler, because ending the session takes locks and starts a thread.
    static func exitOnSignals(_ handler: @escaping @Sendable () -> Void) -> [any DispatchSourceSignal] {
        [SIGTERM, SIGINT, SIGHUP].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            return source
        }
    }

    /// A group by name, or a number as a gid (as chown(1) reads it).
    static func groupID(_ name: String) -> gid_t? {
        var group = Glibc.group()
        var found: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 16384)
        if getgrnam_r(name, &group, &buffer, buffer.count, &found) == 0, let found { return found.pointee.gr_gid }
        return gid_t(name)
    }

    /// Raises the soft RLIMIT_NOFILE to the hard one; returns the limit now in force.
    static func raiseOpenFileLimit() -> Int {
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)
    }

    static func absoluteDirectory(_ path: String, create: Bool) throws -> String {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        if create, Self.deadFuseMount(at: url.path) == nil {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        }
        var info = stat()
        guard stat(url.path, &info) == 0 else {
            let code = errno
            // The sweep detaches the mounts of dead instances: one still here belongs to a process that looks
            // alive (stopped, or its pid taken by another process) but no longer serves it.
            if code == ENOTCONN, let mount = Self.deadFuseMount(at: url.path) {
                let owner = InstanceNames.owner(fsName: mount.source).map { "instance \($0)" } ?? mount.source
                throw ValidationFailure("\(path) is a dead FUSE mount of \(owner), whose process still looks alive, so it was not swept; if that daemon is gone, detach the mount with: umount -l \(url.path)")
            }
            throw ValidationFailure("\(path): \(SystemError.describe(code))")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw ValidationError("\(path) is not a directory") }
        return url.resolvingSymlinksInPath().path
    }

    /// The FUSE mount at `path` whose daemon is gone (it answers ENOTCONN), if there is one.
    static func deadFuseMount(at path: String) -> MountEntry? {
        var info = stat()
        guard stat(path, &info) != 0, errno == ENOTCONN else { return nil }
        return Mount.mountPoints().last { $0.mountPoint == path && $0.type.hasPrefix("fuse") }
    }
}
