/// The compressed image formats served: IMAGES_DIR/NAME.img.xz, .img.gz, .img.zst.
public enum Compression: String, Sendable, CaseIterable, Codable {
    case xz
    case gzip
    case zstd

    /// The file name suffix after NAME.
    public var suffix: String {
        switch self {
        case .xz: ".img.xz"
        case .gzip: ".img.gz"
        case .zstd: ".img.zst"
        }
    }

    /// The compression whose suffix ends `fileName`, and NAME before it.
    public static func match(_ fileName: String) -> (name: String, compression: Compression)? {
        for compression in allCases where fileName.hasSuffix(compression.suffix) {
            return (String(fileName.dropLast(compression.suffix.count)), compression)
        }
        return nil
    }
}
