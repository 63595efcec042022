import CLinux
import Foundation
import Glibc
import SandboxDiff
import Testing
import TestSupport
@testable import SandboxFS

/// A seeded random sequence of every mutating operation through FUSE on a journaled sandbox (what the dm
/// engine's diff and save read): after every step the journal's comparison must equal the comparison of
/// the whole trees. Checked step by step over a tree of a few hundred entries, so a change the journal
/// misses shows before a later step happens to journal the same path for another reason. The dm engine
/// itself adds nothing here: the journal is kept by the FUSE layer, whatever is below it.
extension SandboxFSTests {
    /// What the sequence does, and the FUSE operations each kind sends.
    enum RandomStep: CaseIterable {
        case mkfifo, mkdir, symlink, createAndWrite, unlink, rmdir, rename, renameNoReplace, renameExchange, link,
             chmod, chown, truncate, utimens, setxattr, removexattr, openWrite, openTruncate, fallocate, copyRange,
             tmpfileLinked

        var operations: [FuseOperation] {
            switch self {
            case .mkfifo: [.mknod]
            case .mkdir: [.mkdir]
            case .symlink: [.symlink]
            case .createAndWrite: [.create, .write]
            case .unlink: [.unlink]
            case .rmdir: [.rmdir]
            case .rename, .renameNoReplace, .renameExchange: [.rename]
            case .link: [.link]
            case .chmod, .chown, .truncate, .utimens: [.setattr]
            case .setxattr: [.setxattr]
            case .removexattr: [.removexattr]
            case .openWrite, .openTruncate: [.open, .write]
            case .fallocate: [.open, .fallocate]
            case .copyRange: [.open, .copyFileRange]
            case .tmpfileLinked: [.tmpfile, .write, .link]
            }
        }
    }

    @Test("a seeded random sequence of every mutating operation: the journal's diff equals the whole trees' diff",
          arguments: [(seed: UInt64(24), passthrough: true), (seed: UInt64(2401), passthrough: false)])
    func randomOperationsAreAllJournaled(seed: UInt64, passthrough: Bool) throws {
        // Every operation the table calls mutating is in the sequence.
        let covered = Set(RandomStep.allCases.flatMap(\.operations))
        let mutating = FuseOperation.allCases.filter { $0.treeChange != nil }
        #expect(mutating.filter { !covered.contains($0) }.isEmpty, "mutating operations the sequence never sends")

        var options = FileSystemOptions()
        options.passthrough = passthrough
        let m = try MountedFS(options: options, journaled: true)
        defer { m.stop() }
        try #require(mkdir(m.path("alpha/sandboxes/r"), 0o755) == 0)
        let ref = try #require(m.provider.sandbox(image: "alpha", name: "r"))
        let journal = try #require(ref.journal)
        let s = m.path("alpha/sandboxes/r"), pristine = m.root + "/pristine"
        let made = try run(["sh", "-c", """
            set -e; cd "$1"
            mkdir -p a/b/c d e/f empty1 empty2 a/empty3
            for d in a a/b a/b/c d e e/f; do
                for i in $(seq 1 40); do echo "$d $i" > $d/f$i; setfattr -n user.x -v $i $d/f$i; done
            done
            ln d/f5 e/f5-hard; ln -s ../f9 a/b/sym; setfattr -n user.y -v 2 d
            find . -exec touch -h -d @1000000 {} +
            cp -a "$1" "$2"
            """, "sh", ref.mountPath, pristine])
        try #require(made.0 == 0, "\(made.1)")

        let random = Dice(seed: seed)
        var done: [RandomStep: Int] = [:]
        var full: [String] = []
        for index in 0..<300 {
            // What exists now, read below FUSE (no request, nothing journaled).
            let (files, dirs, emptyDirs) = try tree(ref.mountPath)
            let step = random.pick(RandomStep.allCases)!
            if perform(step, s, files: files, dirs: dirs, emptyDirs: emptyDirs, random) { done[step, default: 0] += 1 }
            let snapshot = journal.snapshot()
            try #require(snapshot.complete, "step \(index) (\(step)) made the journal give up")
            full = try TreeDiff.full(sandbox: ref.mountPath, pristine: pristine).map(\.line)
            let journaled = try TreeDiff.journal(sandbox: ref.mountPath, pristine: pristine, paths: snapshot).map(\.line)
            try #require(journaled == full, """
                seed \(seed), step \(index) (\(step)): journal only: \(journaled.filter { !full.contains($0) }), \
                full only: \(full.filter { !journaled.contains($0) })
                """)
        }
        #expect(RandomStep.allCases.filter { done[$0] == nil }.isEmpty, "kinds that never succeeded: \(done)")
        #expect(full.count > 50, "\(full)")
    }

    /// The sequence's choices, from one seeded generator.
    final class Dice {
        private var generator: SplitMix64
        private var counter = 0
        init(seed: UInt64) { generator = SplitMix64(seed: seed) }
        func next() -> UInt64 { generator.next() }
        func bytes(_ count: Int) -> [UInt8] { generator.bytes(count) }
        func pick<T>(_ list: [T]) -> T? { list.isEmpty ? nil : list[Int(next() % UInt64(list.count))] }
        /// A name no entry had before, in one of `dirs`.
        func fresh(in dirs: [String]) -> String {
            counter += 1
            return (pick(dirs) ?? "") + "/n\(counter)"
        }
    }

    /// Regular files (symlinks and fifos left out), directories and the empty ones below `root` ("/a/1"),
    /// sorted; the root directory is "".
    private func tree(_ root: String) throws -> (files: [String], dirs: [String], emptyDirs: [String]) {
        var files: [String] = [], dirs: [String] = [""], parents: Set<String> = []
        for path in try FileManager.default.subpathsOfDirectory(atPath: root).sorted() {
            guard let st = lstatOf(root + "/" + path) else { continue }
            parents.insert("/" + (path.split(separator: "/").dropLast().joined(separator: "/")))
            switch UInt32(st.st_mode) & UInt32(S_IFMT) {
            case UInt32(S_IFDIR): dirs.append("/" + path)
            case UInt32(S_IFREG): files.append("/" + path)
            default: break
            }
        }
        return (files, dirs, dirs.filter { !$0.isEmpty && !parents.contains($0) })
    }

    /// One step through the mount at `s`; true when it succeeded (failures such as ENOTEMPTY are part of
    /// the sequence: they must leave nothing unjournaled either).
    private func perform(_ step: RandomStep, _ s: String, files: [String], dirs: [String], emptyDirs: [String],
                         _ random: Dice) -> Bool {
        func pick(_ list: [String]) -> String? { random.pick(list) }
        func fresh() -> String { random.fresh(in: dirs) }
        let bytes = random.bytes(Int(random.next() % 9000) + 1)
        func writeAll(_ fd: Int32, at offset: off_t) -> Bool {
            bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) } == bytes.count
        }
        func withOpen(_ path: String, _ flags: Int32, _ body: (Int32) -> Bool) -> Bool {
            let fd = open(s + path, flags | O_CLOEXEC, 0o640)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            return body(fd)
        }
        let anyEntry = pick(files + dirs.filter { !$0.isEmpty })
        switch step {
        case .mkfifo: return mkfifo(s + fresh(), 0o600) == 0
        case .mkdir: return mkdir(s + fresh(), 0o750) == 0
        case .symlink: return symlink("target-\(random.next() % 10)", s + fresh()) == 0
        case .createAndWrite: return withOpen(fresh(), O_WRONLY | O_CREAT | O_EXCL) { writeAll($0, at: 0) }
        case .unlink:
            guard let file = pick(files) else { return false }
            return unlink(s + file) == 0
        case .rmdir:
            // Mostly empty ones (the others answer ENOTEMPTY, journaled all the same).
            guard let dir = pick(random.next() % 4 == 0 ? dirs.filter { !$0.isEmpty } : emptyDirs) else { return false }
            return rmdir(s + dir) == 0
        case .rename:
            guard let from = anyEntry else { return false }
            let to = random.next() % 2 == 0 ? fresh() : (pick(files) ?? fresh())
            return rename(s + from, s + to) == 0
        case .renameNoReplace:
            guard let from = anyEntry else { return false }
            return clinux_renameat2(AT_FDCWD, s + from, AT_FDCWD, s + fresh(), clinux_RENAME_NOREPLACE) == 0
        case .renameExchange:
            guard let a = anyEntry, let b = pick(files + dirs.filter { !$0.isEmpty }), a != b else { return false }
            return clinux_renameat2(AT_FDCWD, s + a, AT_FDCWD, s + b, clinux_RENAME_EXCHANGE) == 0
        case .link:
            guard let file = pick(files) else { return false }
            return link(s + file, s + fresh()) == 0
        case .chmod:
            guard let entry = anyEntry else { return false }
            return chmod(s + entry, mode_t(0o700 | random.next() % 0o100)) == 0
        case .chown:
            guard let entry = anyEntry else { return false }
            return lchown(s + entry, uid_t(1000 + random.next() % 3), gid_t(1000 + random.next() % 3)) == 0
        case .truncate:
            guard let file = pick(files) else { return false }
            return truncate(s + file, off_t(random.next() % 20000)) == 0
        case .utimens:
            guard let entry = anyEntry else { return false }
            var times = [timespec(tv_sec: Int(2_000_000 + random.next() % 1000), tv_nsec: 0),
                         timespec(tv_sec: Int(2_000_000 + random.next() % 1000), tv_nsec: Int(random.next() % 1000))]
            return utimensat(AT_FDCWD, s + entry, &times, AT_SYMLINK_NOFOLLOW) == 0
        case .setxattr:
            guard let entry = anyEntry else { return false }
            return clinux_lsetxattr(s + entry, "user.r\(random.next() % 3)", bytes, min(bytes.count, 64), 0) == 0
        case .removexattr:
            guard let entry = pick(files + dirs.filter { !$0.isEmpty }) else { return false }
            var found = false
            for name in ["user.x", "user.y", "user.r0", "user.r1", "user.r2"] where clinux_lremovexattr(s + entry, name) == 0 {
                found = true
            }
            return found
        case .openWrite:
            guard let file = pick(files) else { return false }
            let offset = off_t(random.next() % 16384)
            return withOpen(file, random.next() % 2 == 0 ? O_WRONLY : O_RDWR | O_APPEND) { writeAll($0, at: offset) }
        case .openTruncate:
            guard let file = pick(files) else { return false }
            return withOpen(file, O_WRONLY | O_TRUNC) { writeAll($0, at: 0) }
        case .fallocate:
            guard let file = pick(files) else { return false }
            let length = Int64(random.next() % 65536) + 1
            return withOpen(file, O_WRONLY) { clinux_fallocate($0, 0, Int64(random.next() % 8192), length) == 0 }
        case .copyRange:
            guard let source = pick(files), let target = pick(files), source != target else { return false }
            return withOpen(source, O_RDONLY) { inFD in
                withOpen(target, O_WRONLY) { outFD in
                    var inOffset: Int64 = 0, outOffset = Int64(random.next() % 4096)
                    return clinux_copy_file_range(inFD, &inOffset, outFD, &outOffset, 4096, 0) >= 0
                }
            }
        case .tmpfileLinked:
            guard let dir = pick(dirs) else { return false }
            let fd = open(s + dir, clinux_O_TMPFILE | O_WRONLY | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            guard writeAll(fd, at: 0) else { return false }
            return linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, s + fresh(), AT_SYMLINK_FOLLOW) == 0
        }
    }
}
