import Foundation
import Glibc

/// Directory listings.
extension ConformanceChecks {
    static func name(of entry: UnsafeMutablePointer<dirent>) -> String {
        withUnsafePointer(to: &entry.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
    }

    static func listing(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return ["opendir: \(ErrnoName.of(errno))"] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) { names.append(name(of: entry)) }
        return names
    }

    static let directories: [ConformanceCheck] = [
        ConformanceCheck("readdir of 10,000 entries while entries are added and removed") { root in
            var o = Outcome()
            let dir = "\(root)/many"
            mkdir(dir, 0o755)
            var failures = 0
            for index in 0..<10_000 where Posix.writeFile("\(dir)/" + String(format: "f%05d", index), "") != 0 { failures += 1 }
            o.note("create failures: \(failures)")
            // Every tenth file is removed and 1,000 new ones are added while the listing is read: POSIX lets
            // those appear or not, but every other name must appear exactly once and nothing else may.
            let victims = stride(from: 7, to: 10_000, by: 10).map { String(format: "f%05d", $0) }
            let added = (0..<1_000).map { String(format: "n%05d", $0) }
            guard let stream = opendir(dir) else {
                o.note("opendir: \(ErrnoName.of(errno))")
                return o
            }
            var seen: [String: Int] = [:]
            var read = 0, changed = 0
            while let entry = readdir(stream) {
                seen[name(of: entry), default: 0] += 1
                read += 1
                // Every 9th entry: the 9,002 stable entries alone are enough for all 1,000 changes, so their
                // number does not depend on how many changed names the listing happens to show.
                if read % 9 == 0, changed < 1_000 {
                    unlink("\(dir)/\(victims[changed])")
                    Posix.writeFile("\(dir)/\(added[changed])", "")
                    changed += 1
                }
            }
            closedir(stream)
            let stable = Set((0..<10_000).filter { $0 % 10 != 7 }.map { String(format: "f%05d", $0) }).union([".", ".."])
            let allowed = stable.union(victims).union(added)
            o.note("changes made while reading: \(changed)")
            o.note("stable names missing: \(stable.filter { seen[$0] == nil }.count)")
            o.note("names seen twice: \(seen.filter { $0.value > 1 }.count)")
            o.note("names never created: \(seen.keys.filter { !allowed.contains($0) }.count)")
            let after = listing(dir)
            o.note("listing after: \(after.count) entries, as expected: \(Set(after) == stable.union(added))")
            // A second pass over a reopened stream with rewinddir sees the same.
            if let again = opendir(dir) {
                var count = 0
                while readdir(again) != nil { count += 1 }
                rewinddir(again)
                var rewound = 0
                while readdir(again) != nil { rewound += 1 }
                closedir(again)
                o.note("entries, after rewinddir: \(count) \(rewound)")
            }
            o.stat("many", dir)
            return o
        },
        ConformanceCheck("readdir types, seekdir and a lower directory") { root in
            var o = Outcome()
            mkdir("\(root)/lowerdir/sub", 0o755)
            Posix.writeFile("\(root)/lowerdir/new", "n")
            symlink("inner", "\(root)/lowerdir/ln")
            mkfifo("\(root)/lowerdir/p", 0o600)
            unlink("\(root)/lowerdir/new")
            Posix.writeFile("\(root)/lowerdir/new2", "n")
            guard let dir = opendir("\(root)/lowerdir") else {
                o.note("opendir: \(ErrnoName.of(errno))")
                return o
            }
            var entries: [(String, UInt8, Int)] = []
            while true {
                let position = telldir(dir)
                guard let entry = readdir(dir) else { break }
                entries.append((name(of: entry), entry.pointee.d_type, position))
            }
            o.note("entries: " + entries.map { "\($0.0):\($0.1)" }.sorted().joined(separator: " "))
            if entries.count > 2 {
                seekdir(dir, entries[2].2)
                let entry = readdir(dir)
                o.note("seekdir to the third entry gives it back: \(entry.map { name(of: $0) } == entries[2].0)")
            }
            closedir(dir)
            o.stat("lowerdir", "\(root)/lowerdir")
            o.call("rmdir lowerdir (not empty)", rmdir("\(root)/lowerdir"))
            for name in ["inner", "ln", "p", "new2"] { unlink("\(root)/lowerdir/\(name)") }
            rmdir("\(root)/lowerdir/sub")
            o.note("emptied: " + listing("\(root)/lowerdir").sorted().joined(separator: " "))
            o.call("rmdir lowerdir (emptied)", rmdir("\(root)/lowerdir"))
            o.call("mkdir lowerdir again", mkdir("\(root)/lowerdir", 0o700))
            o.note("fresh: " + listing("\(root)/lowerdir").sorted().joined(separator: " "))
            o.stat("lowerdir", "\(root)/lowerdir")
            return o
        },
    ]
}
