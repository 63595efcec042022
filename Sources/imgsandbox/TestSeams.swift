import Glibc
import ImageCache
import Logging

/// Seams for the integration tests, which drive this binary: compiled into debug builds only (what
/// `swift build` makes and `swift test` runs), so a release daemon has none.
enum TestSeams {
    /// IMGSANDBOX_TEST_PREPARE_GATE=FIFO: each image preparation waits after its first output until a
    /// writer has opened the FIFO and closed it again, so a test sees one in progress without sleeping.
    static func cacheHooks(_ environment: [String: String], logger: Logger) -> CacheTestHooks {
        #if DEBUG
        guard let gate = environment["IMGSANDBOX_TEST_PREPARE_GATE"] else { return CacheTestHooks() }
        logger.notice("test seam IMGSANDBOX_TEST_PREPARE_GATE: each preparation waits at \(gate) after its first output")
        return CacheTestHooks(firstOutput: { _ in wait(at: gate) })
        #else
        return CacheTestHooks()
        #endif
    }

    /// Blocks until a writer has opened the FIFO and closed it again.
    private static func wait(at gate: String) {
        let fd = open(gate, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        var byte: UInt8 = 0
        while read(fd, &byte, 1) > 0 {}
        close(fd)
    }
}
