import Foundation
import Glibc
import Testing

/// One POSIX check: run in a scratch directory, it returns what it observed.
struct ConformanceCheck: Sendable, CustomTestStringConvertible {
    let name: String
    /// Set when the FUSE side is known to differ, with why (the test then fails if it stops differing).
    let knownDifference: String?
    let run: @Sendable (String) throws -> Outcome

    init(_ name: String, knownDifference: String? = nil, _ run: @escaping @Sendable (String) throws -> Outcome) {
        self.name = name
        self.knownDifference = knownDifference
        self.run = run
    }

    var testDescription: String { name }
}

/// The conformance suite (go-fuse posixtest style): every check runs once on the sandbox's hidden mount
/// and once through FUSE on the same sandbox, and both must observe the same.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct ConformanceSuite {
    static let checks: [ConformanceCheck] = ConformanceChecks.open + ConformanceChecks.names + ConformanceChecks.attributes
        + ConformanceChecks.data + ConformanceChecks.xattrs + ConformanceChecks.directories + ConformanceChecks.nonRoot
        + ConformanceChecks.pjd

    @Test(arguments: checks)
    func sameThroughFuseAsDirect(_ check: ConformanceCheck) throws {
        let fixture = try ConformanceFixture()
        defer { fixture.close() }
        umask(0o022)
        let direct = try check.run(fixture.directScratch)
        let fuse = try check.run(fixture.fuseScratch)
        #expect(!direct.lines.isEmpty)
        if let known = check.knownDifference {
            withKnownIssue(Comment(rawValue: known)) { #expect(fuse == direct) }
        } else {
            #expect(fuse == direct)
        }
    }
}
