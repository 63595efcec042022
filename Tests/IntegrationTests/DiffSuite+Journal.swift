import CLinux
import Foundation
import Glibc
import RandomMutations
import SandboxDiff
@testable import SandboxFS
import Testing

/// `imgsandbox diff` after a seeded random sequence of every mutating operation, through `serve`'s mount,
/// against a full comparison of the sandbox with IMAGE/pristine/ made here. On the dm engine (Tools/vm-test)
/// diff reads only the paths the FUSE layer journaled (MutatingOperations.swift's table), so a change the
/// journal misses shows as a difference; on overlay it reads the upper layer.
extension DiffSuite {
    @Test("diff after each step of a seeded random sequence of every mutating operation equals the full comparison",
          arguments: [UInt64(24)])
    func diffAfterRandomOperationsEqualsTheFullComparison(seed: UInt64) throws {
        let covered = Set(RandomStep.allCases.flatMap(\.operations))
        let mutating = FuseOperation.allCases.filter { $0.treeChange != nil }
        #expect(mutating.filter { !covered.contains($0.name) }.isEmpty, "mutating operations the sequence never sends")

        // The image's own files, xattrs, hard link and empty directories, enough for the first round's
        // untouched step of every kind: only a change to what no step journaled before can show a step the
        // journal missed.
        let extra = NSTemporaryDirectory() + "/imgsandbox-journal-extra-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: extra) }
        try run(["sh", "-c", """
            set -e; mkdir -p "$1/a/b" "$1/c" "$1/d/e1" "$1/a/e2"; cd "$1"
            for d in a a/b c d; do for i in 1 2 3 4 5 6; do echo "$d $i" > $d/f$i; setfattr -n user.x -v $i $d/f$i; done; done
            ln a/f1 c/f1-hard; setfattr -n user.y -v 1 a
            """, "sh", extra])
        // An ext4 root and nothing else (a FAT partition is compared by FATDiff, not by walking its view).
        let fixture = try ServeFixture(images: [("w", "whole-ext4", ["--extra", extra, "--size", "64M"])])
        defer { fixture.close() }
        try fixture.start()
        let sandbox = fixture.sandbox("w", "j"), pristine = fixture.mountpoint + "/w/pristine"
        try #require(mkdir(sandbox, 0o755) == 0)
        // Held open so that pristine/ stays attached between comparisons (released when nothing is open);
        // closed before the daemon stops (declared after the fixture's defer, so it runs first).
        let pristineFD = open(pristine, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        try #require(pristineFD >= 0, "open \(pristine): errno \(errno)")
        var pristineHeld = true
        defer { if pristineHeld { close(pristineFD) } }
        // A kernel or libfuse without FUSE_TMPFILE answers EOPNOTSUPP (an unlinked tmpfile changes nothing).
        let tmpfile = open(sandbox, clinux_O_TMPFILE | O_WRONLY | O_CLOEXEC, 0o600)
        if tmpfile >= 0 { close(tmpfile) }

        let random = Dice(seed: seed)
        var done: [RandomStep: Int] = [:], untouched: Set<RandomStep> = []
        var index = 0
        // Every kind once per round, in a seeded order. The first round changes only what no step before
        // touched (the image's own entries and xattrs, new names), so every kind's change is compared before
        // any other record can cover it: a kind the journal misses fails there, whatever the seed. The second
        // round mixes kinds over paths already changed (a third added a minute under emulation and no kind).
        for round in 0..<2 {
            for step in random.shuffled(RandomStep.allCases) {
                // Up to four tries (a random rename may pick a directory below itself): a failure changes nothing.
                if try (0..<4).contains(where: { _ in
                    step.perform(in: sandbox, try TreeShape(reading: sandbox), random, untouchedOnly: round == 0)
                }) {
                    done[step, default: 0] += 1
                    if round == 0 { untouched.insert(step) }
                }
                let full = try TreeDiff.full(sandbox: sandbox, pristine: pristine).map(\.line)
                let answer = try ChangeFixture.diff(sandbox, json: true)
                try #require(answer.status == 0, "\(answer.output)")
                let listed = try JSONDecoder().decode([Change].self, from: Data(answer.output.utf8)).map(\.line)
                try #require(listed == full, """
                    seed \(seed), step \(index) (\(step)\(round == 0 ? ", untouched" : "")): diff only: \
                    \(listed.filter { !full.contains($0) }), full comparison only: \(full.filter { !listed.contains($0) })
                    """)
                index += 1
            }
        }
        // A mismatch with the table makes the journal give up, and diff then compares whole trees (right,
        // but no longer a test of the journal): MutatingOperations.swift logs it.
        #expect(!fixture.log.contains { $0.contains("but the table says") }, "\(fixture.log.filter { $0.contains("table") })")
        let unsupported: Set<RandomStep> = tmpfile >= 0 ? [] : [.tmpfileLinked]
        #expect(RandomStep.allCases.filter { done[$0] == nil && !unsupported.contains($0) }.isEmpty, "kinds that never succeeded: \(done)")
        let neverUntouched = RandomStep.allCases.filter { !untouched.contains($0) && !unsupported.contains($0) }
        #expect(neverUntouched.isEmpty, "kinds that found nothing untouched: \(neverUntouched)")
        close(pristineFD)
        pristineHeld = false
        #expect(rmdir(sandbox) == 0)
        #expect(fixture.stop() == 0)
    }
}
