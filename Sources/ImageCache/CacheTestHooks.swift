/// Points where tests step in to hold an image preparation in progress without sleeping (as SandboxFS's
/// TestHooks do for the FUSE layer). Given once at init; production has none and pays one nil check.
public struct CacheTestHooks: Sendable {
    /// A preparation of `image` produced its first output (a conversion: qemu-img runs) and reported its
    /// progress; it goes on when this returns. Runs once per preparation, on its thread, with no lock held.
    public var firstOutput: (@Sendable (_ image: String) -> Void)?

    public init(firstOutput: (@Sendable (_ image: String) -> Void)? = nil) {
        self.firstOutput = firstOutput
    }
}
