import CLinux
import Foundation
import Glibc
import SandboxDiff
import Testing
@testable import SandboxFS

/// The change journal a dm sandbox's diff reads: every change made through FUSE must be named in it, so
/// the journal's comparison equals a comparison of the whole trees.
extension SandboxFSTests {
    @Test("every change made through FUSE is in the change journal",
          arguments: [(passthrough: true, writeback: false), (passthrough: false, writeback: true)])
    func changeJournalNamesEveryChange(passthrough: Bool, writeback: Bool) throws {
        var options = FileSystemOptions()
        options.passthrough = passthrough
        options.writebackCache = writeback
        let m = try MountedFS(options: options, journaled: true)
        defer { m.stop() }
        try #require(mkdir(m.path("alpha/sandboxes/j"), 0o755) == 0)
        let ref = try #require(m.provider.sandbox(image: "alpha", name: "j"))
        let journal = try #require(ref.journal)
        let s = m.path("alpha/sandboxes/j"), pristine = m.root + "/pristine"
        // The image: made below FUSE with old times, and copied as the pristine tree to compare with.
        let made = try run(["sh", "-c", """
            set -e; cd "$1"
            mkdir -p etc usr/bin home/pi/docs home/pi/gone/inner etc/replace-me-dir
            for f in hostname motd rw old a owned timed xattr trunc later replace linked pair; do echo "$f" > etc/$f; done
            echo tool > usr/bin/tool; echo shared > usr/bin/a; ln usr/bin/a usr/bin/a-hard; ln etc/pair etc/pair-b
            echo doc > home/pi/docs/one; echo doc2 > home/pi/docs/two; echo g > home/pi/gone/inner/g
            ln -s hostname etc/link; setfattr -n user.old -v 1 etc/xattr
            find . -exec touch -h -d @1000000 {} +
            cp -a "$1" "$2"
            """, "sh", ref.mountPath, pristine])
        try #require(made.0 == 0, "\(made.1)")

        func write(_ path: String, _ text: String, flags: Int32, at offset: off_t = 0) {
            let fd = open(s + path, flags, 0o644)
            #expect(fd >= 0, "open \(path)")
            #expect(pwrite(fd, text, strlen(text), offset) == strlen(text))
            close(fd)
        }
        write("/etc/hostname", "box\n", flags: O_WRONLY | O_TRUNC)
        write("/etc/motd", "more\n", flags: O_WRONLY | O_APPEND)
        write("/etc/rw", "X", flags: O_RDWR, at: 1)
        write("/etc/new", "new\n", flags: O_WRONLY | O_CREAT | O_EXCL)
        #expect(unlink(s + "/etc/old") == 0)
        #expect(mkdir(s + "/work", 0o755) == 0)
        write("/work/x", "x\n", flags: O_WRONLY | O_CREAT)
        #expect(mkfifo(s + "/work/fifo", 0o600) == 0)
        #expect(symlink("x", s + "/work/l") == 0)
        #expect(rename(s + "/home/pi/docs", s + "/home/pi/documents") == 0)
        #expect(rename(s + "/etc/a", s + "/etc/b") == 0)
        #expect(chmod(s + "/usr/bin/tool", 0o700) == 0)
        #expect(chown(s + "/etc/owned", 1000, 1000) == 0)
        var times = [timespec(tv_sec: 2_000_000, tv_nsec: 0), timespec(tv_sec: 2_000_000, tv_nsec: 5)]
        #expect(utimensat(AT_FDCWD, s + "/etc/timed", &times, 0) == 0)
        #expect(clinux_lsetxattr(s + "/etc/xattr", "user.new", "v", 1, 0) == 0)
        #expect(clinux_lremovexattr(s + "/etc/xattr", "user.old") == 0)
        #expect(truncate(s + "/etc/trunc", 2) == 0)
        #expect(link(s + "/etc/hostname", s + "/work/hostname-hard") == 0)
        // Link counts: a new name for an unchanged file, and a name of a pair removed.
        #expect(link(s + "/etc/linked", s + "/work/linked-hard") == 0)
        #expect(unlink(s + "/etc/pair-b") == 0)
        // A file with two names in the image, written through one: both differ.
        write("/usr/bin/a-hard", "changed\n", flags: O_WRONLY | O_TRUNC)
        #expect(unlink(s + "/home/pi/gone/inner/g") == 0 && rmdir(s + "/home/pi/gone/inner") == 0 && rmdir(s + "/home/pi/gone") == 0)
        // Opened for writing, renamed, then written: the write lands under the new name.
        let later = open(s + "/etc/later", O_WRONLY)
        #expect(later >= 0)
        #expect(rename(s + "/etc/later", s + "/etc/later2") == 0)
        #expect(pwrite(later, "late", 4, 0) == 4)
        close(later)
        #expect(unlink(s + "/etc/replace") == 0 && mkdir(s + "/etc/replace", 0o700) == 0)
        #expect(rmdir(s + "/etc/replace-me-dir") == 0)
        write("/etc/replace-me-dir", "now a file\n", flags: O_WRONLY | O_CREAT)

        let snapshot = journal.snapshot()
        #expect(snapshot.complete)
        let full = try TreeDiff.full(sandbox: ref.mountPath, pristine: pristine).map(\.line)
        let journaled = try TreeDiff.journal(sandbox: ref.mountPath, pristine: pristine, paths: snapshot).map(\.line)
        #expect(full.count > 30, "\(full)")
        #expect(journaled == full, "journal only: \(journaled.filter { !full.contains($0) }), full only: \(full.filter { !journaled.contains($0) })")
        #expect(full.contains("modified content,times /usr/bin/a"), "the image's other name of a written file")
        #expect(full.contains("modified links /etc/linked") && full.contains("modified links /etc/pair"))
    }

    @Test("a sandbox of an engine with a change set has no journal")
    func noJournalWithoutAsking() throws {
        let m = try MountedFS()
        defer { m.stop() }
        try #require(mkdir(m.path("alpha/sandboxes/n"), 0o755) == 0)
        #expect(m.provider.sandbox(image: "alpha", name: "n")?.journal == nil)
    }
}
