import Glibc
import LinuxBlock

/// IMAGES_DIR/NAME.img files: each regular file (a symlink to one counts, the directory is the admin's)
/// whose name does not start with '.' is offered as image NAME.
enum ImageDirectory {
    static let suffix = ".img"

    static func names(in directory: String) -> [String] {
        FileIO.list(directory).filter { $0.hasSuffix(suffix) }.map { String($0.dropLast(suffix.count)) }
            .filter { path(of: $0, in: directory) != nil }
    }

    /// The image's resolved path when NAME is a plausible name and NAME.img is (a symlink to) a regular
    /// file; else nil. Resolved here, in the admin's directory, because the image is then opened O_NOFOLLOW.
    static func path(of name: String, in directory: String) -> String? {
        guard !name.isEmpty, !name.hasPrefix("."), !name.contains("/"), !name.utf8.contains(0) else { return nil }
        let path = "\(directory)/\(name)\(suffix)"
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        var info = stat()
        guard stat(resolved, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
        return String(cString: resolved)
    }
}
