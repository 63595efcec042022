/// The serve options that shape every sandbox.
public struct SandboxSettings: Sendable, Equatable {
    public static let mebibyte: UInt64 = 1 << 20

    /// RAM budget of one sandbox's COW store.
    public var cowSize: UInt64 = 512 * mebibyte
    /// dm engine: how far a sandbox's COW store may grow, a --cow-size step at a time, while it is used;
    /// nil means it stays at cowSize.
    public var cowMax: UInt64? = nil
    /// dm-snapshot exception size.
    public var chunkSize: UInt64 = 8 << 10
    /// How far the root filesystem is enlarged; nil means "by the (maximum) COW budget", so a user can fill
    /// the COW store before the filesystem runs out of blocks.
    public var grow: UInt64? = nil
    /// Root partition number chosen by the user for every image (`--partition N`); nil: RootChoice decides.
    public var partition: Int? = nil
    /// `--partition NAME=N`: per image, before `partition`.
    public var partitionByImage: [String: Int] = [:]

    public init() {}

    public func partition(for image: String) -> Int? { partitionByImage[image] ?? partition }

    public var effectiveGrow: UInt64 { grow ?? effectiveCowMax }
    /// The most COW store a sandbox can have.
    public var effectiveCowMax: UInt64 { max(cowMax ?? cowSize, cowSize) }
}
