/// Points where tests can step in to order events that are otherwise up to the kernel's timing (when a
/// RELEASE arrives relative to an rmdir). Given once at init (tests only; production has none, and pays
/// one nil check); each hook runs on the request's thread with no lock held.
struct TestHooks {
    /// A RELEASE/RELEASEDIR removed handle `fh` and is about to close its fd.
    var handleRemoved: (@Sendable (UInt64) -> Void)?
    /// An rmdir found handles open in its sandbox and is about to wait for their releases.
    var rmdirWaits: (@Sendable () -> Void)?
}
