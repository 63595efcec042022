import Foundation
import Glibc
import PrintableText
import Testing
import CLinux
@testable import SandboxDiff

/// Trees in a temp folder: `pristine` and `sandbox` (and an `upper` shaped like overlayfs makes it).
private final class Trees {
    let root: String
    init() throws {
        root = NSTemporaryDirectory() + "sandboxdiff-\(UUID().uuidString.prefix(8))"
        for part in ["pristine", "sandbox", "upper"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(part)", withIntermediateDirectories: true)
        }
    }
    deinit { try? FileManager.default.removeItem(atPath: root) }

    func path(_ part: String, _ relative: String) -> String { "\(root)/\(part)\(relative)" }

    /// Writes the same file (bytes, mode, mtime) into each of `parts`.
    func file(_ relative: String, _ text: String, in parts: [String] = ["pristine", "sandbox"], mtime: Int = 1_000_000) throws {
        for part in parts {
            let path = self.path(part, relative)
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            setTime(path, mtime)
        }
    }

    func setTime(_ path: String, _ seconds: Int) {
        var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
        utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
    }

    func lines(_ changes: [Change]) -> [String] { changes.map(\.line) }
}

@Suite struct TreeDiffTests {
    @Test func fullComparisonFindsEveryKindAndNothingElse() throws {
        let trees = try Trees()
        try trees.file("/etc/hostname", "pi\n")
        try trees.file("/etc/same", "same\n")
        try trees.file("/etc/gone", "x\n", in: ["pristine"])
        try trees.file("/olddir/a", "a\n", in: ["pristine"])
        try trees.file("/new/b", "b\n", in: ["sandbox"])
        try trees.file("/etc/hostname", "box\n", in: ["sandbox"], mtime: 2_000_000)
        try trees.file("/etc/samesize", "aaaa", in: ["pristine"])
        try trees.file("/etc/samesize", "aaab", in: ["sandbox"])
        chmod(trees.path("sandbox", "/etc/same"), 0o600)
        symlink("target-a", trees.path("pristine", "/link"))
        symlink("target-b", trees.path("sandbox", "/link"))
        for part in ["pristine", "sandbox"] {
            trees.setTime(trees.path(part, "/link"), 5)
            for dir in ["/etc", "/", "/olddir", "/new"] where FileManager.default.fileExists(atPath: trees.path(part, dir)) {
                trees.setTime(trees.path(part, dir), 7)
            }
        }
        let changes = try TreeDiff.full(sandbox: trees.path("sandbox", ""), pristine: trees.path("pristine", ""))
        #expect(trees.lines(changes) == [
            "deleted /etc/gone",
            "modified content,times /etc/hostname",
            "modified mode /etc/same",
            "modified content /etc/samesize",
            "modified link_target /link",
            "added /new",
            "added /new/b",
            "deleted /olddir",
            "deleted /olddir/a",
        ])
    }

    /// A name added to a file (a hard link) changes its link count: `links` on the names compared.
    @Test func aNewHardLinkShowsAsLinksOnItsOtherName() throws {
        let trees = try Trees()
        try trees.file("/usr/bin/x", "x\n")
        try trees.file("/etc/pair-a", "p\n")
        #expect(link(trees.path("pristine", "/etc/pair-a"), trees.path("pristine", "/etc/pair-b")) == 0)
        #expect(link(trees.path("sandbox", "/etc/pair-a"), trees.path("sandbox", "/etc/pair-b")) == 0)
        try FileManager.default.createDirectory(atPath: trees.path("sandbox", "/work"), withIntermediateDirectories: true)
        #expect(link(trees.path("sandbox", "/usr/bin/x"), trees.path("sandbox", "/usr/bin/y")) == 0)
        #expect(link(trees.path("sandbox", "/usr/bin/x"), trees.path("sandbox", "/work/z")) == 0)
        #expect(unlink(trees.path("sandbox", "/etc/pair-b")) == 0)
        for part in ["pristine", "sandbox"] {
            for dir in ["", "/etc", "/usr", "/usr/bin", "/work"] where FileManager.default.fileExists(atPath: trees.path(part, dir)) {
                trees.setTime(trees.path(part, dir), 7)
            }
        }
        #expect(trees.lines(try TreeDiff.full(sandbox: trees.path("sandbox", ""), pristine: trees.path("pristine", ""))) == [
            "modified links /etc/pair-a",
            "deleted /etc/pair-b",
            "modified links /usr/bin/x",
            "added /usr/bin/y",
            "added /work",
            "added /work/z",
        ])
    }

    @Test func sparseFilesAreComparedByBytesNotLayout() throws {
        let trees = try Trees()
        // Same bytes: one file sparse, the other written out; then one byte past 4 GiB differs.
        let sparse = open(trees.path("pristine", "/big"), O_CREAT | O_WRONLY, 0o644)
        #expect(ftruncate(sparse, (4 << 30) + 4096) == 0)
        close(sparse)
        let dense = open(trees.path("sandbox", "/big"), O_CREAT | O_WRONLY, 0o644)
        #expect(ftruncate(dense, (4 << 30) + 4096) == 0)
        let zeros = [UInt8](repeating: 0, count: 4096)
        #expect(pwrite(dense, zeros, 4096, 1 << 20) == 4096)
        close(dense)
        for part in ["pristine", "sandbox"] { trees.setTime(trees.path(part, "/big"), 9); trees.setTime(trees.path(part, ""), 9) }
        #expect(try TreeDiff.full(sandbox: trees.path("sandbox", ""), pristine: trees.path("pristine", "")).isEmpty)
        let fd = open(trees.path("sandbox", "/big"), O_WRONLY)
        #expect(pwrite(fd, [1], 1, (4 << 30) + 100) == 1)
        close(fd)
        trees.setTime(trees.path("sandbox", "/big"), 9)
        #expect(trees.lines(try TreeDiff.full(sandbox: trees.path("sandbox", ""), pristine: trees.path("pristine", "")))
            == ["modified content /big"])
    }

    @Test func xattrsAndOddNamesAreCompared() throws {
        let trees = try Trees()
        try trees.file("/f", "x")
        #expect(clinux_setxattr(trees.path("sandbox", "/f"), "user.note", "v", 1, 0) == 0)
        let odd = "/new\nline"
        try trees.file(odd, "y", in: ["sandbox"])
        for part in ["pristine", "sandbox"] { trees.setTime(trees.path(part, ""), 3) }
        let changes = try TreeDiff.full(sandbox: trees.path("sandbox", ""), pristine: trees.path("pristine", ""))
        #expect(trees.lines(changes) == ["modified xattrs /f", "added /new\\x0aline"])
        #expect(PathText.unescape(changes[1].path) == Array(odd.utf8))
    }

    @Test(.enabled(if: geteuid() == 0, "whiteouts and trusted.overlay xattrs need root"))
    func overlayWalkReadsOnlyTheUpperLayer() throws {
        let trees = try Trees()
        // pristine = lower; sandbox = what the merged view shows; upper = the change set overlayfs keeps.
        try trees.file("/etc/hostname", "pi\n")
        try trees.file("/etc/untouched", "u\n")
        try trees.file("/etc/motd", "m\n", in: ["pristine"])
        try trees.file("/opt/old/file", "o\n", in: ["pristine"])
        try trees.file("/opt/old/keep", "k\n", in: ["pristine"])
        try trees.file("/etc/hostname", "box\n", in: ["sandbox", "upper"], mtime: 2_000_000)
        try trees.file("/opt/old/new", "n\n", in: ["sandbox", "upper"])
        try FileManager.default.createDirectory(atPath: trees.path("upper", "/etc"), withIntermediateDirectories: true)
        #expect(mknod(trees.path("upper", "/etc/motd"), S_IFCHR | 0o600, 0) == 0)
        #expect(clinux_setxattr(trees.path("upper", "/opt/old"), "trusted.overlay.opaque", "y", 1, 0) == 0)
        // An untouched file missing from the merged view would be a deletion in a full comparison; the
        // overlay walk must not look there because the upper layer holds no entry for it.
        try trees.file("/etc/untouched", "u\n", in: ["sandbox"])
        for part in ["pristine", "sandbox"] {
            for dir in ["", "/etc", "/opt", "/opt/old"] { trees.setTime(trees.path(part, dir), 11) }
        }
        let changes = try TreeDiff.overlay(merged: trees.path("sandbox", ""), upper: trees.path("upper", ""),
                                           lower: trees.path("pristine", ""))
        #expect(trees.lines(changes) == [
            "modified content,times /etc/hostname", "deleted /etc/motd",
            "deleted /opt/old/file", "deleted /opt/old/keep", "added /opt/old/new",
        ])
        // Proof that only the upper layer is walked: remove an untouched file from the "merged" tree.
        unlink(trees.path("sandbox", "/etc/untouched"))
        trees.setTime(trees.path("sandbox", "/etc"), 11)
        #expect(try TreeDiff.overlay(merged: trees.path("sandbox", ""), upper: trees.path("upper", ""),
                                     lower: trees.path("pristine", "")).count == changes.count)
    }
}
