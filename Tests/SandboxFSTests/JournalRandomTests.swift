import Foundation
import Glibc
import RandomMutations
import SandboxDiff
import Testing
@testable import SandboxFS

/// A seeded random sequence of every mutating operation through FUSE on a journaled sandbox (what the dm
/// engine's diff and save read): after every step the journal's comparison must equal the comparison of
/// the whole trees. Checked step by step over a tree of a few hundred entries, so a change the journal
/// misses shows before a later step happens to journal the same path for another reason. The dm engine
/// itself adds nothing here: the journal is kept by the FUSE layer, whatever is below it.
extension SandboxFSTests {
    @Test("a seeded random sequence of every mutating operation: the journal's diff equals the whole trees' diff",
          arguments: [(seed: UInt64(24), passthrough: true), (seed: UInt64(2401), passthrough: false)])
    func randomOperationsAreAllJournaled(seed: UInt64, passthrough: Bool) throws {
        // Every operation the table calls mutating is in the sequence.
        let covered = Set(RandomStep.allCases.flatMap(\.operations))
        let mutating = FuseOperation.allCases.filter { $0.treeChange != nil }
        #expect(mutating.filter { !covered.contains($0.name) }.isEmpty, "mutating operations the sequence never sends")

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
        var done: [RandomStep: Int] = [:], untouched: Set<RandomStep> = []
        var full: [String] = []
        // First every kind once on what no step touched before (so a kind the journal misses fails right
        // there, whatever the seed), then random kinds on anything.
        let firsts = random.shuffled(RandomStep.allCases)
        for index in 0..<(firsts.count + 300) {
            // What exists now, read below FUSE (no request, nothing journaled).
            let shape = try TreeShape(reading: ref.mountPath)
            let first = index < firsts.count
            let step = first ? firsts[index] : random.pick(RandomStep.allCases)!
            if step.perform(in: s, shape, random, untouchedOnly: first) {
                done[step, default: 0] += 1
                if first { untouched.insert(step) }
            }
            let snapshot = journal.snapshot()
            try #require(snapshot.complete, "step \(index) (\(step)) made the journal give up")
            full = try TreeDiff.full(sandbox: ref.mountPath, pristine: pristine).map(\.line)
            let journaled = try TreeDiff.journal(sandbox: ref.mountPath, pristine: pristine, paths: snapshot).map(\.line)
            try #require(journaled == full, """
                seed \(seed), step \(index) (\(step)\(first ? ", untouched" : "")): journal only: \
                \(journaled.filter { !full.contains($0) }), full only: \(full.filter { !journaled.contains($0) })
                """)
        }
        #expect(RandomStep.allCases.filter { done[$0] == nil }.isEmpty, "kinds that never succeeded: \(done)")
        let neverUntouched = RandomStep.allCases.filter { !untouched.contains($0) }
        #expect(neverUntouched.isEmpty, "kinds that found nothing untouched: \(neverUntouched)")
        #expect(full.count > 50, "\(full)")
    }
}
