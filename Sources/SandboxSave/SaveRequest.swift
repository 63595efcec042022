import Glibc
import LinuxBlock
import PrintableText
import Sandbox

/// `imgsandbox save`: where to write and how.
public struct SaveRequest: Sendable {
    /// Absolute path of OUT.img (the caller's working directory already applied).
    public let output: String
    public let force: Bool
    public let shrink: Bool
    /// The FUSE mountpoint: an output inside it is refused.
    public let servedTree: String
    /// The caller's umask, applied to 0666 for OUT (as a file the caller wrote itself would get).
    public let umask: mode_t

    public init(output: String, force: Bool, shrink: Bool, servedTree: String, umask: mode_t) {
        self.output = output
        self.force = force
        self.shrink = shrink
        self.servedTree = servedTree
        self.umask = umask
    }

    /// OUT's mode.
    public var mode: mode_t { 0o666 & ~umask }
}

public struct SaveProgress: Sendable, Codable {
    /// "copy" (the image, sparsely), "changes" (replaying the sandbox's changes), "shrink".
    public let phase: String
    public let doneBytes: UInt64
    public let totalBytes: UInt64
}

public struct SaveResult: Sendable, Codable {
    public let output: String
    public let sizeBytes: UInt64
    /// What the sparse output occupies on disk.
    public let allocatedBytes: UInt64
    public let changes: Int
    public let seconds: Double
    /// Entries the image cannot hold (sockets), left out.
    public let skipped: [String]
    /// Whether the sandbox's writes waited during the replay (its filesystem frozen).
    public let writesWaited: Bool
}

/// The checks on OUT before anything is written.
enum SaveTarget {
    /// The resolved output path, or why it is refused.
    static func validate(_ request: SaveRequest, source: String, runDirectory: String) throws(SandboxError) -> String {
        let output = request.output
        guard output.hasPrefix("/") else { throw refused("\(PathText.escape(output)): the output path must be absolute", EINVAL) }
        let name = output.split(separator: "/").last.map(String.init) ?? ""
        guard !name.isEmpty, name != ".", name != "..", !output.hasSuffix("/") else {
            throw refused("\(PathText.escape(output)): not a file name", EINVAL)
        }
        let parent = String(output.dropLast(name.count))
        guard let resolved = realpath(parent, nil) else { throw refused("\(PathText.escape(parent))", errno) }
        let directory = String(cString: resolved)
        free(resolved)
        let path = (directory == "/" ? "" : directory) + "/" + name
        for (tree, what) in [(request.servedTree, "the served tree"), (runDirectory, "the daemon's run directory")]
        where path == tree || path.hasPrefix(tree + "/") {
            throw refused("\(PathText.escape(path)) is inside \(what) (\(PathText.escape(tree)))", EINVAL)
        }
        var sourceInfo = stat(), info = stat()
        guard stat(source, &sourceInfo) == 0 else { throw refused("\(PathText.escape(source))", errno) }
        for follow in [false, true] {
            let rc = follow ? stat(path, &info) : lstat(path, &info)
            if rc == 0, info.st_dev == sourceInfo.st_dev, info.st_ino == sourceInfo.st_ino {
                throw refused("\(PathText.escape(path)) is the source image", EINVAL)
            }
        }
        if lstat(path, &info) == 0 {
            guard request.force else { throw refused("\(PathText.escape(path)) exists (--force replaces it)", EEXIST) }
            guard info.st_mode & S_IFMT != S_IFDIR else { throw refused("\(PathText.escape(path)) is a directory", EISDIR) }
        }
        return path
    }

    static func refused(_ what: String, _ errno: Int32) -> SandboxError {
        .stepFailed(step: "save", underlying: SystemError("refused:", what, errno: errno))
    }
}
