import Dispatch
import Testing
@testable import SandboxFS

/// Per-operation request counts: every operation named as the kernel names it, counts exact under concurrency.
@Suite struct RequestCountsTests {
    @Test func namesAreTheKernelOpcodes() {
        let names = FuseOperation.allCases.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(names.contains("batch_forget") && names.contains("copy_file_range") && names.contains("getxattr"))
        #expect(names.allSatisfy { $0 == $0.lowercased() })
    }

    @Test func countsEveryRequestFromManyThreads() {
        let counts = RequestCounts()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<10_000 { counts.count(.lookup) }
            counts.count(.create)
        }
        let snapshot = counts.snapshot
        #expect(snapshot["lookup"] == 80_000)
        #expect(snapshot["create"] == 8)
        #expect(snapshot["getxattr"] == 0)
        #expect(snapshot.count == FuseOperation.allCases.count)
    }
}
