import Foundation
import Glibc
import TestSupport
import Testing
import CLinux
@testable import SandboxDiff

/// A pristine tree and a sandbox copy of it, changed the way the FUSE layer changes a dm sandbox: every
/// operation recorded in a ChangeJournal first, then run. The journal's diff must equal the full comparison.
private final class JournaledTree {
    let root: String
    let sandbox: String
    let pristine: String
    let journal: ChangeJournal
    let mountFD: Int32

    init(limit: Int = ChangeJournal.defaultLimit) throws {
        root = NSTemporaryDirectory() + "journal-\(UUID().uuidString.prefix(8))"
        sandbox = root + "/sandbox"
        pristine = root + "/pristine"
        for d in 0..<4 {
            for sub in ["", "/sub"] {
                try FileManager.default.createDirectory(atPath: "\(pristine)/d\(d)\(sub)", withIntermediateDirectories: true)
                for f in 0..<4 { try Data("file \(d)\(sub) \(f)\n".utf8).write(to: URL(fileURLWithPath: "\(pristine)/d\(d)\(sub)/f\(f)")) }
            }
        }
        symlink("d0/f0", "\(pristine)/link")
        link("\(pristine)/d1/f0", "\(pristine)/d1/f0-hard")
        // Old times everywhere: a change made now always shows as a moved mtime.
        _ = try Self.shell("find \"$1\" -exec touch -h -d @1000000 {} +", pristine)
        _ = try Self.shell("cp -a \"$1\" \"$2\"", pristine, sandbox)
        journal = ChangeJournal(mountPath: sandbox, limit: limit)
        mountFD = open(sandbox, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    }

    deinit {
        close(mountFD)
        try? FileManager.default.removeItem(atPath: root)
    }

    @discardableResult
    static func shell(_ script: String, _ arguments: String...) throws -> String {
        Subprocess.run(["/bin/sh", "-c", script, "sh"] + arguments, output: .stdoutOnly).output
    }

    func path(_ relative: String) -> String { sandbox + relative }

    /// As the FUSE layer does before an op on `name` in its parent directory.
    func recordEntry(_ relative: String, tree: Bool = false) {
        let slash = relative.lastIndex(of: "/")!
        let parent = String(relative[..<slash]), name = String(relative[relative.index(after: slash)...])
        let fd = open(sandbox + parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        journal.recordEntry(in: fd, name: Array(name.utf8), mountFD: mountFD, tree: tree)
        close(fd)
    }

    /// As the FUSE layer does before an op on the node itself (setattr, setxattr, an open for writing).
    func recordNode(_ relative: String) {
        let fd = open(sandbox + relative, clinux_O_PATH | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return }
        journal.recordInode(fd, mountFD: mountFD)
        close(fd)
    }

    func write(_ relative: String, _ text: String) {
        if FileManager.default.fileExists(atPath: path(relative)) { recordNode(relative) } else { recordEntry(relative) }
        let fd = open(path(relative), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { return }
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }

    func remove(_ relative: String) {
        var info = stat()
        guard lstat(path(relative), &info) == 0 else { return }
        if info.st_mode & S_IFMT == S_IFDIR {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path(relative))) ?? [] { remove(relative + "/" + name) }
            recordEntry(relative)
            rmdir(path(relative))
        } else {
            recordEntry(relative)
            unlink(path(relative))
        }
    }

    func makeDirectory(_ relative: String) {
        recordEntry(relative)
        mkdir(path(relative), 0o755)
    }

    func move(_ from: String, _ to: String) {
        recordEntry(from, tree: true)
        recordEntry(to, tree: true)
        rename(path(from), path(to))
    }

    func changeMode(_ relative: String, _ mode: mode_t) {
        recordNode(relative)
        chmod(path(relative), mode)
    }

    func setXattr(_ relative: String, _ value: String) {
        recordNode(relative)
        _ = value.withCString { clinux_lsetxattr(path(relative), "user.test", $0, strlen($0), 0) }
    }

    func makeSymlink(_ relative: String, _ target: String) {
        recordEntry(relative)
        symlink(target, path(relative))
    }

    func hardLink(_ existing: String, _ relative: String) {
        // As passLink: the file gains a name (its link count changes), and the new name appears.
        recordNode(existing)
        recordEntry(relative)
        link(path(existing), path(relative))
    }

    func journalDiff() throws -> [String] {
        try TreeDiff.journal(sandbox: sandbox, pristine: pristine, paths: journal.snapshot()).map(\.line)
    }

    func fullDiff() throws -> [String] {
        try TreeDiff.full(sandbox: sandbox, pristine: pristine).map(\.line)
    }

    /// Every entry of the sandbox (not "/"), for picking one at random.
    func entries() -> [String] {
        ((try? FileManager.default.subpathsOfDirectory(atPath: sandbox)) ?? []).map { "/" + $0 }.sorted()
    }
}

@Suite struct JournalTests {
    @Test func freshJournalGivesNoChanges() throws {
        let tree = try JournaledTree()
        #expect(try tree.journalDiff().isEmpty)
        #expect(try tree.fullDiff().isEmpty)
    }

    @Test func everyKindOfChangeMatchesTheFullComparison() throws {
        let tree = try JournaledTree()
        tree.write("/d0/f1", "changed\n")
        tree.write("/d0/new", "new\n")
        tree.remove("/d1/f2")
        tree.remove("/d2")
        tree.makeDirectory("/d3/fresh")
        tree.write("/d3/fresh/inside", "x\n")
        tree.changeMode("/d0/f3", 0o600)
        tree.setXattr("/d0/sub/f0", "noted")
        tree.remove("/link")
        tree.makeSymlink("/link", "elsewhere")
        tree.hardLink("/d0/f0", "/d3/f0-hard")
        // A file recorded at its old place, then its directory moved: the moved tree covers it.
        tree.write("/d1/sub/f1", "moved with its directory\n")
        tree.move("/d1/sub", "/d3/moved")
        tree.move("/d0/f2", "/d0/f2.renamed")
        // A file replaced by a directory.
        tree.remove("/d3/f1")
        tree.makeDirectory("/d3/f1")
        tree.write("/d3/f1/x", "x\n")
        let full = try tree.fullDiff()
        #expect(full.count > 20)
        #expect(try tree.journalDiff() == full)
        #expect(tree.journal.snapshot().complete)
    }

    @Test(arguments: [1, 2, 3, 4, 5])
    func randomOperationsMatchTheFullComparison(seed: UInt64) throws {
        let tree = try JournaledTree()
        var state = seed &* 0x9E37_79B9_7F4A_7C15
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        var fresh = 0
        for _ in 0..<150 {
            let existing = tree.entries()
            let pick = existing.isEmpty ? "/d0" : existing[next(existing.count)]
            let dir = FileManager.default.fileExists(atPath: tree.path(pick) + "/.") ? pick : TreeDiff.parentText(pick)
            fresh += 1
            let newPath = (dir == "/" ? "" : dir) + "/n\(fresh)"
            switch next(9) {
            case 0: tree.write(pick, "w\(fresh)\n")
            case 1: tree.write(newPath, "n\(fresh)\n")
            case 2: tree.remove(pick)
            case 3: tree.makeDirectory(newPath)
            case 4: tree.move(pick, newPath)
            case 5: tree.changeMode(pick, mode_t(0o600 + next(0o100)))
            case 6: tree.setXattr(pick, "v\(fresh)")
            case 7: tree.makeSymlink(newPath, "t\(fresh)")
            default: tree.hardLink(pick, newPath)
            }
        }
        let journal = try tree.journalDiff(), full = try tree.fullDiff()
        #expect(journal == full, "journal only: \(journal.filter { !full.contains($0) }), full only: \(full.filter { !journal.contains($0) })")
    }

    @Test func unnamedInodesAreFoundByReadingDirectories() throws {
        let tree = try JournaledTree()
        // Changed through a name the journal never saw: found under every name it has.
        let fd = open(tree.path("/d1/f0"), O_WRONLY | O_TRUNC)
        #expect(fd >= 0)
        close(fd)
        var info = stat()
        #expect(lstat(tree.path("/d1/f0"), &info) == 0)
        let paths = JournalPaths(inodes: [UInt64(info.st_ino)])
        let lines = try TreeDiff.journal(sandbox: tree.sandbox, pristine: tree.pristine, paths: paths).map(\.line)
        #expect(lines == ["modified content,times /d1/f0", "modified content,times /d1/f0-hard"])
        #expect(lines == (try tree.fullDiff()))
    }

    @Test func anUnlinkedFileIsNotRecorded() throws {
        let tree = try JournaledTree()
        let fd = open(tree.path("/d0/f0"), clinux_O_PATH | O_NOFOLLOW)
        #expect(fd >= 0)
        defer { close(fd) }
        unlink(tree.path("/d0/f0"))
        tree.journal.recordInode(fd, mountFD: tree.mountFD)
        #expect(tree.journal.snapshot() == JournalPaths())
    }

    @Test func pastItsLimitTheJournalFallsBackToTheFullComparison() throws {
        let tree = try JournaledTree(limit: 2)
        tree.write("/d0/f1", "1\n")
        #expect(tree.journal.snapshot().complete)
        tree.write("/d1/f1", "1\n")
        tree.write("/d2/f1", "1\n")
        let snapshot = tree.journal.snapshot()
        #expect(!snapshot.complete && snapshot.entries.isEmpty)
        #expect(try tree.journalDiff() == tree.fullDiff())
        #expect(try tree.fullDiff().count == 3)
    }

    @Test func pathsAreRecordedFromTheMountRoot() throws {
        let tree = try JournaledTree()
        tree.write("/d0/sub/f0", "x\n")
        tree.recordEntry("/d0/new")
        tree.move("/d1", "/d1-moved")
        let snapshot = tree.journal.snapshot()
        #expect(snapshot.entries == [Array("/d0/sub/f0".utf8), Array("/d0".utf8), Array("/d0/new".utf8), Array("/".utf8)])
        #expect(snapshot.trees == [Array("/d1".utf8), Array("/d1-moved".utf8)])
    }
}

extension TreeDiff {
    static func parentText(_ path: String) -> String {
        String(decoding: parent(of: Array(path.utf8)), as: UTF8.self)
    }
}
