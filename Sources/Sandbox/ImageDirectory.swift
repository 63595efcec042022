import Glibc
import ImageCache
import LinuxBlock

/// One file that offers image NAME: IMAGES_DIR/NAME.img, or a compressed NAME.img.xz/.gz/.zst.
struct ImageSource: Equatable {
    /// Resolved path.
    let path: String
    /// nil for a plain image.
    let compression: Compression?
    var fileName: String { "\(path.split(separator: "/").last ?? "")" }
}

/// IMAGES_DIR/NAME.img files (and NAME.img.xz, .img.gz, .img.zst): each regular file (a symlink to one
/// counts, the directory is the admin's) whose name does not start with '.' is offered as image NAME.
enum ImageDirectory {
    static let suffix = ".img"

    static func names(in directory: String) -> [String] {
        var names: Set<String> = []
        for fileName in FileIO.list(directory) {
            let name: String
            if fileName.hasSuffix(suffix) {
                name = String(fileName.dropLast(suffix.count))
            } else if let match = Compression.match(fileName) {
                name = match.name
            } else {
                continue
            }
            if !names.contains(name), !sources(of: name, in: directory).isEmpty { names.insert(name) }
        }
        return Array(names)
    }

    /// Every file offering NAME, the one served first: NAME.img, then NAME.img.xz, .img.gz, .img.zst.
    /// Empty unless NAME is a plausible name. Resolved here, in the admin's directory, because the file is
    /// then opened O_NOFOLLOW.
    static func sources(of name: String, in directory: String) -> [ImageSource] {
        guard !name.isEmpty, !name.hasPrefix("."), !name.contains("/"), !name.utf8.contains(0) else { return [] }
        let kinds: [(String, Compression?)] = [(suffix, nil)] + Compression.allCases.map { ($0.suffix, $0) }
        return kinds.compactMap { fileSuffix, compression in
            guard let resolved = realpath("\(directory)/\(name)\(fileSuffix)", nil) else { return nil }
            defer { free(resolved) }
            var info = stat()
            guard stat(resolved, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
            return ImageSource(path: String(cString: resolved), compression: compression)
        }
    }
}
