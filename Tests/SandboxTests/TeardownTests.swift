import Glibc
import LinuxBlock
import Testing
@testable import Sandbox

/// The undo stack: newest first; a failing step stops the run and stays, with the steps below it, for the
/// next run; `partial` says whether some step was undone before it.
struct TeardownTests {
    final class Log: @unchecked Sendable {
        var entries: [String] = []
        var failing: Set<String> = []
    }

    @Test func aFailureStopsTheRunAndTheNextRunResumesThere() throws {
        let log = Log()
        let teardown = Teardown()
        for name in ["remove zram", "remove mount point", "unmount upper"] {
            teardown.push(name) {
                log.entries.append(name)
                if log.failing.contains(name) { throw SystemError("step", name, errno: EBUSY) }
            }
        }
        log.failing = ["unmount upper"]
        do { try teardown.run() } catch { #expect(!error.partial && error.step == "unmount upper") }
        #expect(!teardown.hasUndone)
        log.failing = ["remove zram"]
        do { try teardown.run() } catch { #expect(error.partial && error.step == "remove zram") }
        #expect(teardown.hasUndone)
        log.failing = []
        try teardown.run()
        #expect(log.entries == ["unmount upper", "unmount upper", "remove mount point", "remove zram", "remove zram"])
        try teardown.run() // nothing left
        #expect(log.entries.count == 5)
    }
}
