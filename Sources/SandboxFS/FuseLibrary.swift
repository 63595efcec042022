import CFuse

/// Which libfuse this process runs, for `imgsandbox --version`.
public enum FuseLibrary {
    /// The running library's version (fuse_pkgversion): with a static libfuse, the one linked in.
    public static var version: String { String(cString: fuse_pkgversion()) }
    /// MAJOR.MINOR of the headers the build used.
    public static var headerVersion: String { "\(FUSE_MAJOR_VERSION).\(FUSE_MINOR_VERSION)" }
}
