/// The stream compressions an image file may carry: NAME.img.xz, .gz, .zst, .bz2 (also around a VM disk
/// or a tar archive: NAME.qcow2.xz, NAME.tar.gz).
public enum Compression: String, Sendable, CaseIterable, Codable {
    case xz
    case gzip
    case zstd
    case bzip2

    /// The file name suffix.
    public var suffix: String {
        switch self {
        case .xz: ".xz"
        case .gzip: ".gz"
        case .zstd: ".zst"
        case .bzip2: ".bz2"
        }
    }
}

/// Archives that hold one disk image: NAME.zip (Raspbian before 2020), NAME.7z, NAME.tar(.xz ...).
public enum ArchiveFormat: String, Sendable, CaseIterable, Codable {
    case zip
    case sevenZip = "7z"
    case tar

    public var suffix: String { "." + rawValue }
}

/// Virtual machine disk formats, converted to raw by `qemu-img convert`. The raw value is qemu's driver name.
public enum VMDiskFormat: String, Sendable, CaseIterable, Codable {
    case qcow2
    case vmdk
    case vdi
    case vhdx
    case vpc

    public var suffix: String { self == .vpc ? ".vhd" : "." + rawValue }
}
