import Foundation
import Glibc
import Testing

/// The everyday changes a user makes in a sandbox, each checked right after it is made.
enum FileChecks {
    static func writeFile(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, mode)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let written = text.withCString { write(fd, $0, strlen($0)) }
        #expect(written == text.utf8.count)
    }

    static func readFile(_ path: String) -> String? {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
    }

    static func stat(_ path: String) -> Glibc.stat? {
        var info = Glibc.stat()
        return lstat(path, &info) == 0 ? info : nil
    }

    /// Files, dirs, symlinks, hard links, xattrs, modes, owners, and a file of `bigMebibytes`; `tag` makes
    /// the content unique to this sandbox so isolation can be checked.
    static func makeChanges(in root: String, tag: String, bigMebibytes: Int) throws {
        try FileManager.default.createDirectory(atPath: "\(root)/work/\(tag)/deep", withIntermediateDirectories: true)
        try writeFile("\(root)/work/\(tag)/note.txt", "hello from \(tag)\n")
        #expect(readFile("\(root)/work/\(tag)/note.txt") == "hello from \(tag)\n")
        #expect(symlink("note.txt", "\(root)/work/\(tag)/link") == 0)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(root)/work/\(tag)/link")) == "note.txt")
        #expect(link("\(root)/work/\(tag)/note.txt", "\(root)/work/\(tag)/hard") == 0)
        #expect(stat("\(root)/work/\(tag)/note.txt")?.st_nlink == 2)
        #expect(chmod("\(root)/work/\(tag)/note.txt", 0o640) == 0)
        #expect(stat("\(root)/work/\(tag)/hard").map { $0.st_mode & 0o7777 } == 0o640)
        #expect(chown("\(root)/work/\(tag)/note.txt", 1000, 1001) == 0)
        #expect(stat("\(root)/work/\(tag)/note.txt").map { ($0.st_uid, $0.st_gid) } ?? (0, 0) == (1000, 1001))
        try run(["setfattr", "-n", "user.imgsandbox", "-v", "v-\(tag)", "\(root)/work/\(tag)/note.txt"])
        let xattr = try run(["getfattr", "--absolute-names", "--only-values", "-n", "user.imgsandbox", "\(root)/work/\(tag)/note.txt"]).output
        #expect(xattr == "v-\(tag)")
        // Changing a file that came with the image.
        try writeFile("\(root)/etc/hostname", "\(tag)\n")
        #expect(readFile("\(root)/etc/hostname") == "\(tag)\n")
        try writeBig("\(root)/work/\(tag)/big.bin", mebibytes: bigMebibytes, seed: UInt8(truncatingIfNeeded: tag.hashValue))
    }

    /// Paths under `root` that share an st_ino without being hard links of one file (a directory and a
    /// file, or two files that differ): `cp -a` and `tar` take such pairs for hard links. Walks with lstat,
    /// never following a link, within one st_dev.
    static func inodeClashes(under root: String) -> [String] {
        var first: [UInt64: (path: String, info: Glibc.stat)] = [:]
        var clashes: [String] = []
        var pending = [root]
        while let dir = pending.popLast() {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
            for name in names {
                let path = "\(dir)/\(name)"
                guard let info = stat(path) else { continue }
                let isDir = info.st_mode & S_IFMT == S_IFDIR
                if isDir { pending.append(path) }
                guard let seen = first[UInt64(info.st_ino)] else { first[UInt64(info.st_ino)] = (path, info); continue }
                let sameFile = !isDir && seen.info.st_mode == info.st_mode && seen.info.st_nlink > 1
                    && seen.info.st_nlink == info.st_nlink && seen.info.st_size == info.st_size
                if !sameFile { clashes.append("\(seen.path) and \(path): st_ino \(info.st_ino)") }
            }
        }
        return clashes
    }

    /// MiB number `index` of the data writeBig writes: every 8-byte word holds its own file offset mixed
    /// with `seed`, so a block read from the wrong offset (or another file) never matches.
    static func pattern(mebibyte index: Int, seed: UInt8) -> [UInt8] {
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        chunk.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            let base = UInt64(index) << 20
            for i in words.indices {
                words[i] = ((base + UInt64(i) * 8) &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(seed)
            }
        }
        return chunk
    }

    /// A file of `mebibytes` of pattern(seed:), written then read back and compared.
    static func writeBig(_ path: String, mebibytes: Int, seed: UInt8) throws {
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        for index in 0..<mebibytes {
            let chunk = pattern(mebibyte: index, seed: seed)
            let written = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written == chunk.count else {
                let error = errno
                close(fd)
                throw POSIXError(POSIXErrorCode(rawValue: error) ?? .EIO)
            }
        }
        #expect(fsync(fd) == 0)
        close(fd)
        let readFD = open(path, O_RDONLY)
        defer { close(readFD) }
        var back = [UInt8](repeating: 0, count: 1 << 20)
        var same = true
        for index in 0..<mebibytes {
            let count = back.withUnsafeMutableBytes { read(readFD, $0.baseAddress, $0.count) }
            if count != back.count || back != pattern(mebibyte: index, seed: seed) { same = false }
        }
        #expect(same, "\(path) did not read back as written")
    }
}
