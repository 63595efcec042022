/// The serve options that shape every sandbox.
public struct SandboxSettings: Sendable, Equatable {
    public static let mebibyte: UInt64 = 1 << 20

    /// RAM budget of one sandbox's COW store.
    public var cowSize: UInt64 = 512 * mebibyte
    /// dm-snapshot exception size.
    public var chunkSize: UInt64 = 8 << 10
    /// How far the root filesystem is enlarged; nil means "by the COW budget", so a user can fill the COW
    /// store before the filesystem runs out of blocks.
    public var grow: UInt64? = nil
    /// Root partition number chosen by the user; nil means the largest Linux one.
    public var partition: Int? = nil

    public init() {}

    public var effectiveGrow: UInt64 { grow ?? cowSize }
}
