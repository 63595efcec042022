import SandboxFS

/// The one place the version lives: `imgsandbox --version` prints it, and Tools/package reads it from there.
enum Version {
    static let imgsandbox = "0.1.0"

    /// What `--version` prints: ours, and the libfuse this binary runs (with the headers it was built
    /// against where they differ: a dynamically linked libfuse may be newer than the build's).
    static var text: String {
        let library = FuseLibrary.version, headers = FuseLibrary.headerVersion
        let built = library.hasPrefix(headers + ".") || library == headers ? "" : " (built against \(headers))"
        return "imgsandbox \(imgsandbox)\nlibfuse \(library)\(built)"
    }
}
