import Glibc
import LinuxBlock
import Testing
@testable import Sandbox

/// The undo stack: newest first, stops at a failure, and a repeatable step (releasing mount copies elsewhere)
/// neither makes the object partial nor leaves the stack before the steps below it are done.
struct TeardownTests {
    final class Log: @unchecked Sendable {
        var entries: [String] = []
        var failing: Set<String> = []
    }

    private func stack(_ log: Log) -> Teardown {
        let teardown = Teardown()
        for name in ["remove zram", "unmount upper", "unmount overlay"] {
            teardown.push(name) {
                log.entries.append(name)
                if log.failing.contains(name) { throw SystemError("step", name, errno: EBUSY) }
            }
        }
        teardown.push("release copies", repeatable: true) {
            log.entries.append("release copies")
            if log.failing.contains("release copies") { throw SystemError("step", "release copies", errno: EBUSY) }
        }
        return teardown
    }

    @Test func aFailingRepeatableStepLeavesTheObjectWhole() throws {
        let log = Log()
        log.failing = ["release copies"]
        let teardown = stack(log)
        #expect(throws: TeardownError.self) { try teardown.run() }
        #expect(!teardown.hasUndone)
        do { try teardown.run() } catch { #expect(!error.partial) }
        log.failing = []
        try teardown.run()
        #expect(log.entries == ["release copies", "release copies", "release copies", "unmount overlay", "unmount upper", "remove zram"])
    }

    @Test func aStepFailingAfterTheRepeatableOneIsNotPartialAndTheRetryRunsItAgain() throws {
        let log = Log()
        log.failing = ["unmount overlay"]
        let teardown = stack(log)
        do { try teardown.run() } catch { #expect(!error.partial, "only the repeatable step ran") }
        log.failing = ["remove zram"]
        do { try teardown.run() } catch { #expect(error.partial && error.step == "remove zram") }
        log.failing = []
        try teardown.run()
        #expect(log.entries == ["release copies", "unmount overlay",
                                "release copies", "unmount overlay", "unmount upper", "remove zram",
                                "release copies", "remove zram"])
        try teardown.run() // nothing left
        #expect(log.entries.count == 8)
    }
}
