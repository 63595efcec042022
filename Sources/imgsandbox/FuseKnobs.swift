import SandboxFS

/// Hidden FUSE tuning knobs for Tools/bench/run fuse experiments, from the environment of `serve`:
/// IMGSANDBOX_FUSE_SPLICE=0|1, IMGSANDBOX_FUSE_WRITEBACK=0|1, IMGSANDBOX_FUSE_TIMEOUT=seconds,
/// IMGSANDBOX_FUSE_THREADS=n, IMGSANDBOX_FUSE_PASSTHROUGH=0|1, IMGSANDBOX_FUSE_CACHED_READ_LIMIT=bytes,
/// IMGSANDBOX_FUSE_KILLPRIV=0|1 (FUSE_HANDLE_KILLPRIV_V2), IMGSANDBOX_FUSE_URING=0|1 (FUSE over io_uring),
/// IMGSANDBOX_FUSE_READDIRPLUS_AUTO=0|1. Unset variables keep the defaults.
enum FuseKnobs {
    static func apply(_ environment: [String: String], to options: inout FileSystemOptions) {
        func flag(_ name: String) -> Bool? { environment[name].map { $0 == "1" } }
        if let splice = flag("IMGSANDBOX_FUSE_SPLICE") { options.splice = splice }
        if let writeback = flag("IMGSANDBOX_FUSE_WRITEBACK") { options.writebackCache = writeback }
        if let passthrough = flag("IMGSANDBOX_FUSE_PASSTHROUGH") { options.passthrough = passthrough }
        if let killpriv = flag("IMGSANDBOX_FUSE_KILLPRIV") { options.handleKillpriv = killpriv }
        if let uring = flag("IMGSANDBOX_FUSE_URING") { options.ioUring = uring }
        if let auto = flag("IMGSANDBOX_FUSE_READDIRPLUS_AUTO") { options.readdirplusAuto = auto }
        if let timeout = environment["IMGSANDBOX_FUSE_TIMEOUT"].flatMap(Double.init) { options.passthroughTimeout = timeout }
        if let limit = environment["IMGSANDBOX_FUSE_CACHED_READ_LIMIT"].flatMap(Int.init), limit >= 0 { options.cachedReadLimit = limit }
        if let threads = environment["IMGSANDBOX_FUSE_THREADS"].flatMap(UInt32.init), threads > 0 {
            options.maxThreads = threads
            options.maxIdleThreads = min(options.maxIdleThreads, threads)
        }
    }
}
