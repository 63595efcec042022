import SandboxFS

/// FUSE knobs for benchmarks and experiments (docs/PERFORMANCE.md, "FUSE knobs"), read from serve's
/// environment here and nowhere else; unset variables keep the defaults. Not for production use.
enum FuseKnobs {
    static func apply(_ environment: [String: String], to options: inout FileSystemOptions) {
        func flag(_ name: String) -> Bool? { environment[name].map { $0 == "1" } }
        if let passthrough = flag("IMGSANDBOX_FUSE_PASSTHROUGH") { options.passthrough = passthrough }
        if let killpriv = flag("IMGSANDBOX_FUSE_KILLPRIV") { options.handleKillpriv = killpriv }
        if let uring = flag("IMGSANDBOX_FUSE_URING") { options.ioUring = uring }
        if let auto = flag("IMGSANDBOX_FUSE_READDIRPLUS_AUTO") { options.readdirplusAuto = auto }
        if let limit = environment["IMGSANDBOX_FUSE_CACHED_READ_LIMIT"].flatMap(Int.init), limit >= 0 { options.cachedReadLimit = limit }
    }
}
