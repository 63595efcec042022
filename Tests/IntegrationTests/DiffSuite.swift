import Foundation
import Glibc
import Testing

/// `imgsandbox diff`: exactly the changes made, as lines and as JSON.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct DiffSuite {
    @Test func diffListsExactlyTheChangesMade() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("pi", "d")
        #expect(mkdir(sandbox, 0o755) == 0)
        try ChangeFixture.makeAndExpectExactDiff(in: sandbox)

        let json = try ChangeFixture.diff(sandbox, json: true)
        let array = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [[String: Any]])
        #expect(array.count == ChangeFixture.expectedDiff.count)
        #expect(array.first { $0["path"] as? String == "/usr/bin/hello" }?["aspects"] as? [String] == ["mode", "xattrs"])
        #expect(array.first { $0["path"] as? String == "/work" }?["change"] as? String == "added")

        // Not a sandbox, and a sandbox that is gone: an error, not an empty list.
        #expect(try ChangeFixture.diff(fixture.mountpoint + "/pi").status != 0)
        #expect(rmdir(sandbox) == 0)
        #expect(try ChangeFixture.diff(sandbox).status != 0)
        #expect(fixture.stop() == 0)
    }
}
