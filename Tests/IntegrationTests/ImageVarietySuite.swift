import Foundation
import Glibc
import Testing

/// Images that are not the plain case, and many sandboxes at once.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct ImageVarietySuite {
    static var kinds: [String] {
        var kinds = ["dirty-journal", "ext4-1k", "two-linux", "whole-ext4"]
        let filesystems = (try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8)) ?? ""
        if filesystems.contains("\txfs\n"), access("/sbin/mkfs.xfs", X_OK) == 0 { kinds.append("xfs") }
        if filesystems.contains("\tbtrfs\n"), access("/bin/mkfs.btrfs", X_OK) == 0 || access("/sbin/mkfs.btrfs", X_OK) == 0 {
            kinds.append("btrfs")
        }
        return kinds
    }

    @Test func everyKindOfRootWorks() throws {
        var made: [String] = []
        let fixture = try ServeFixture(images: [])
        defer { fixture.close() }
        for kind in Self.kinds {
            do {
                try fixture.makeImage(kind, kind: kind)
                made.append(kind)
            } catch let failure as CommandFailed where failure.status == 3 {
                continue  // make-test-image cannot build this kind here (it says why)
            }
        }
        try fixture.start()
        for kind in made {
            let sandbox = fixture.sandbox(kind, "s")
            // ext4-1k and xfs (512-byte sectors, as mkfs.xfs makes it on a file) need the dm engine's
            // 512-byte-sector COW loop: zram's 4 KiB sectors cannot carry them.
            let created = mkdir(sandbox, 0o755) == 0
            #expect(created, "mkdir of a \(kind) sandbox: \(String(cString: strerror(errno)))")
            guard created else { continue }
            try FileChecks.writeFile("\(sandbox)/marker", kind)
            #expect(FileChecks.readFile("\(sandbox)/marker") == kind)
            if kind == "two-linux" {
                #expect(FileChecks.readFile("\(sandbox)/which-partition")?.hasPrefix("p2") == true
                        || FileChecks.readFile("\(sandbox)/which-partition")?.hasPrefix("p1") == true)
            }
            #expect(rmdir(sandbox) == 0)
        }
        #expect(fixture.stop() == 0)
    }

    @Test func partitionOptionPicksTheOtherRoot() throws {
        let fixture = try ServeFixture(images: [("two", "two-linux", [])])
        defer { fixture.close() }
        try fixture.start()
        #expect(mkdir(fixture.sandbox("two", "auto"), 0o755) == 0)
        let automatic = FileChecks.readFile("\(fixture.sandbox("two", "auto"))/which-partition")
        #expect(fixture.stop() == 0)
        try fixture.start(["--partition", automatic?.hasPrefix("p1") == true ? "2" : "1"])
        #expect(mkdir(fixture.sandbox("two", "manual"), 0o755) == 0)
        let manual = FileChecks.readFile("\(fixture.sandbox("two", "manual"))/which-partition")
        #expect(automatic != nil && manual != nil && automatic != manual)
        #expect(fixture.stop() == 0)
    }

    @Test func eightSandboxesOfOneImageAtOnce() throws {
        let fixture = try ServeFixture(images: [("pi", "rpi", [])])
        defer { fixture.close() }
        try fixture.start()
        let paths = (0..<8).map { fixture.sandbox("pi", "s\($0)") }
        DispatchQueue.concurrentPerform(iterations: paths.count) { index in
            #expect(mkdir(paths[index], 0o755) == 0)
        }
        for (index, path) in paths.enumerated() { try FileChecks.writeFile("\(path)/mine", "\(index)") }
        for (index, path) in paths.enumerated() { #expect(FileChecks.readFile("\(path)/mine") == "\(index)") }
        #expect(try fixture.status().count == 8)
        DispatchQueue.concurrentPerform(iterations: paths.count) { index in
            #expect(rmdir(paths[index]) == 0)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(fixture.mountpoint)/pi/sandboxes").isEmpty)
        #expect(fixture.stop() == 0)
    }
}
