import Glibc
import ImageCache
import LinuxBlock

/// One file that offers image NAME.
struct ImageSource: Equatable {
    /// Resolved path.
    let path: String
    /// The file's name in IMAGES_DIR (a symlink's own name: it says the format).
    let fileName: String
    let format: ImageFileName.Kind
    var rank: Int { format.rank }
}

/// The files of IMAGES_DIR that offer images (ImageFileName: NAME.img, .raw, .wic, .sdimg, compressed,
/// archives, VM disks). Each regular file (a symlink to one counts, the directory is the admin's) whose
/// name parses is offered as its NAME. An archive is offered by its name; what it holds is checked when
/// its first sandbox is made.
enum ImageDirectory {
    /// Every image NAME with the files offering it, the one served first (ImageFileName.rank, then file name).
    static func scan(_ directory: String, only name: String? = nil) -> [String: [ImageSource]] {
        var found: [String: [ImageSource]] = [:]
        for fileName in FileIO.list(directory) {
            guard let parsed = ImageFileName.parse(fileName), name == nil || parsed.name == name,
                  let source = resolve(fileName, parsed.kind, in: directory) else { continue }
            found[parsed.name, default: []].append(source)
        }
        return found.mapValues { $0.sorted { $0.rank != $1.rank ? $0.rank < $1.rank : Array($0.fileName.utf8).lexicographicallyPrecedes(Array($1.fileName.utf8)) } }
    }

    static func names(in directory: String) -> [String] { Array(scan(directory).keys) }

    /// Every file offering NAME, the one served first. Empty unless NAME is a plausible name.
    static func sources(of name: String, in directory: String) -> [ImageSource] {
        guard !name.isEmpty, !name.hasPrefix("."), !name.contains("/"), !name.utf8.contains(0) else { return [] }
        return scan(directory, only: name)[name] ?? []
    }

    /// Resolved here, in the admin's directory, because the file is then opened O_NOFOLLOW.
    private static func resolve(_ fileName: String, _ format: ImageFileName.Kind, in directory: String) -> ImageSource? {
        guard let resolved = realpath("\(directory)/\(fileName)", nil) else { return nil }
        defer { free(resolved) }
        var info = stat()
        guard stat(resolved, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
        return ImageSource(path: String(cString: resolved), fileName: fileName, format: format)
    }
}
