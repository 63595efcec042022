/// What a file in IMAGES_DIR offers, read from its name alone: the image NAME and how its bytes are
/// reached. NAME is the file name without its suffixes: `raspios.img.xz`, `raspios.zip`,
/// `raspios.img.zip` and `raspios.qcow2` all offer NAME `raspios`.
public struct ImageFileName: Sendable, Equatable, Hashable {
    public enum Kind: Sendable, Equatable, Hashable {
        /// .img .raw .wic .sdimg: served as it is, no cache.
        case raw
        /// A raw image in a compression: decompressed into the cache.
        case compressed(Compression)
        /// An archive (a tar possibly compressed) holding one disk image, raw or VM: extracted into the cache.
        case archive(ArchiveFormat, Compression?)
        /// A VM disk, possibly compressed: converted to raw into the cache by qemu-img.
        case vm(VMDiskFormat, Compression?)

        /// When several files offer one NAME, the lowest rank is served: plain, compressed, archive, VM
        /// disk (then by file name, bytewise).
        public var rank: Int {
            switch self {
            case .raw: 0
            case .compressed: 1
            case .archive: 2
            case .vm: 3
            }
        }
    }

    public let name: String
    public let kind: Kind

    public static let rawSuffixes = [".img", ".raw", ".wic", ".sdimg"]
    static let tarShortForms: [(suffix: String, compression: Compression)] = [
        (".tgz", .gzip), (".txz", .xz), (".tbz2", .bzip2), (".tbz", .bzip2), (".tzst", .zstd),
    ]

    /// nil when the name is not an image's (or NAME would be empty or hidden).
    public static func parse(_ fileName: String) -> ImageFileName? {
        var rest = Substring(fileName)
        // tar's short forms: NAME.tgz is NAME.tar.gz.
        if let short = tarShortForms.first(where: { rest.hasSuffix($0.suffix) }) {
            rest = rest.dropLast(short.suffix.count)
            guard !rest.isEmpty, !rest.hasPrefix("."), !rest.contains("/"), !rest.utf8.contains(0) else { return nil }
            return ImageFileName(name: String(rest), kind: .archive(.tar, short.compression))
        }
        let compression = Compression.allCases.first { rest.hasSuffix($0.suffix) }
        if let compression { rest = rest.dropLast(compression.suffix.count) }
        let kind: Kind
        if let suffix = rawSuffixes.first(where: { rest.hasSuffix($0) }) {
            rest = rest.dropLast(suffix.count)
            kind = compression.map { .compressed($0) } ?? .raw
        } else if let format = VMDiskFormat.allCases.first(where: { rest.hasSuffix($0.suffix) }) {
            rest = rest.dropLast(format.suffix.count)
            kind = .vm(format, compression)
        } else if let format = ArchiveFormat.allCases.first(where: { rest.hasSuffix($0.suffix) }),
                  compression == nil || format == .tar {
            rest = rest.dropLast(format.suffix.count)
            kind = .archive(format, compression)
            // raspios.img.zip offers raspios, like raspios.img.
            if let inner = (rawSuffixes + VMDiskFormat.allCases.map(\.suffix)).first(where: { rest.hasSuffix($0) }) {
                rest = rest.dropLast(inner.count)
            }
        } else {
            return nil
        }
        guard !rest.isEmpty, !rest.hasPrefix("."), !rest.contains("/"), !rest.utf8.contains(0) else { return nil }
        return ImageFileName(name: String(rest), kind: kind)
    }

    /// Everything but a plain image goes through the cache.
    public var needsCache: Bool { kind != .raw }

    /// How `status` and the log name the format: `xz`, `zip`, `tar.gz`, `qcow2`, `qcow2.xz`.
    public var label: String {
        switch kind {
        case .raw: "raw"
        case .compressed(let compression): compression.rawValue
        case .archive(let format, let compression): format.rawValue + (compression.map { "." + $0.rawValue } ?? "")
        case .vm(let format, let compression): format.rawValue + (compression.map { "." + $0.rawValue } ?? "")
        }
    }
}
