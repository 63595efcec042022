import Foundation
import Glibc
import Testing

/// Hard links made or removed in a sandbox are links in the saved image: checked in the output's root
/// filesystem itself (debugfs: inode numbers and link counts), not through the daemon.
extension SaveSuite {
    @Test func hardLinksSurviveTheRoundTrip() throws {
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        // The image (rpi-links): files that stay unchanged, one that is edited, and a pair of names of
        // one file in two directories; prebuilt by Tools/vm-test like every default kind.
        try fixture.makeImage("pi", kind: "rpi-links")
        try fixture.start()
        let sandbox = fixture.sandbox("pi", "l")
        #expect(mkdir(sandbox, 0o755) == 0)
        #expect(link("\(sandbox)/usr/bin/tool", "\(sandbox)/usr/bin/tool-link") == 0, "a new link to an unchanged file")
        #expect(link("\(sandbox)/etc/keep", "\(sandbox)/usr/bin/keep-link") == 0, "its target in another directory")
        try FileChecks.writeFile("\(sandbox)/usr/bin/edited", "new\n")
        #expect(link("\(sandbox)/usr/bin/edited", "\(sandbox)/etc/edited-link") == 0, "a link to a changed file")
        #expect(unlink("\(sandbox)/usr/sbin/pair-b") == 0, "a name of the image's pair removed")
        // One name of another pair replaced as editors do (a new file renamed over it): split-b keeps
        // the image's file, in the sandbox and so in the output, where split-a's inode is still both.
        try FileChecks.writeFile("\(sandbox)/etc/split-a.new", "split changed\n", mode: 0o600)
        #expect(rename("\(sandbox)/etc/split-a.new", "\(sandbox)/etc/split-a") == 0)
        let diff = try ChangeFixture.diff(sandbox)
        #expect(diff.status == 0)
        let lines = diff.output.split(separator: "\n").map(String.init)
        #expect(lines.contains("modified content,links,mode,times /etc/split-a"), "\(lines)")
        #expect(lines.contains("modified links /usr/lib/split-b"), "\(lines)")
        #expect(lines.filter { !$0.contains("/split-") } == [
            "modified times /etc",
            "added /etc/edited-link",
            "modified links /etc/keep",
            "modified links /etc/pair-a",
            "modified times /usr/bin",
            "modified content,links,times /usr/bin/edited",
            "added /usr/bin/keep-link",
            "modified links /usr/bin/tool",
            "added /usr/bin/tool-link",
            "modified times /usr/sbin",
            "deleted /usr/sbin/pair-b",
        ])

        let output = fixture.work + "/links.img"
        let saved = try run([Paths.binary, "save", "--quiet", sandbox, output], allowFailure: true)
        try #require(saved.status == 0, "save: \(saved.output)")
        #expect(try SaveChecks.fsckRoot(output, work: fixture.work), "e2fsck -fn of the saved root partition")
        let root = try SaveChecks.extractPartition(output, work: fixture.work, index: nil)
        defer { unlink(root) }
        let inode = { (path: String) throws -> (inode: Int, links: Int) in try SaveChecks.inode(path, in: root) }
        for (a, b) in [("/usr/bin/tool", "/usr/bin/tool-link"), ("/etc/keep", "/usr/bin/keep-link"),
                       ("/usr/bin/edited", "/etc/edited-link")] {
            let x = try inode(a), y = try inode(b)
            #expect(x.inode == y.inode && x.links == 2, "\(a) \(x) and \(b) \(y): one inode with two links")
        }
        #expect(try inode("/etc/pair-a").links == 1, "the pair's other name removed")

        #expect(rename(output, fixture.images + "/links.img") == 0)
        let copy = fixture.sandbox("links", "c")
        #expect(mkdir(copy, 0o755) == 0)
        #expect(FileChecks.readFile("\(copy)/etc/edited-link") == "new\n")
        #expect(!FileManager.default.fileExists(atPath: "\(copy)/usr/sbin/pair-b"))
        for name in ["/etc/split-a", "/usr/lib/split-b"] {
            #expect(FileChecks.readFile(copy + name) == FileChecks.readFile(sandbox + name), "\(name)'s content")
            #expect(FileChecks.stat(copy + name)?.st_mode == FileChecks.stat(sandbox + name)?.st_mode, "\(name)'s mode")
        }
        let fresh = try ChangeFixture.diff(copy)
        #expect(fresh.status == 0 && fresh.output.isEmpty, "a fresh sandbox of the output has no changes: \(fresh.output)")
        #expect(fixture.stop() == 0)
    }
}

extension SaveChecks {
    /// The inode number and link count of `path` in the ext4 filesystem image `partition` (debugfs).
    static func inode(_ path: String, in partition: String) throws -> (inode: Int, links: Int) {
        let text = try run(["debugfs", "-R", "stat \(path)", partition]).output
        let number = { (label: String) -> Int? in
            guard let range = text.range(of: "\(label): *[0-9]+", options: .regularExpression) else { return nil }
            return Int(text[range].split(separator: " ").last!)
        }
        guard let inode = number("Inode"), let links = number("Links") else {
            throw CommandFailed(argv: ["debugfs", "-R", "stat \(path)", partition], status: 0, output: text)
        }
        return (inode, links)
    }
}
