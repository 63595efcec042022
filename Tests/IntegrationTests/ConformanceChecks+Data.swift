import Foundation
import Glibc

/// File contents: fallocate, holes, large offsets, unlinked-open files, shared mmap, fsync.
extension ConformanceChecks {
    static func fill(_ fd: Int32, byte: UInt8, count: Int, at offset: off_t) -> Int {
        let bytes = [UInt8](repeating: byte, count: count)
        return bytes.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, count, offset) }
    }

    static func contentOf(_ fd: Int32) -> String { Outcome.render(Posix.readAll(fd)) }

    static let data: [ConformanceCheck] = [
        ConformanceCheck("fallocate and punch hole") { root in
            var o = Outcome()
            let fd = Glibc.open("\(root)/f", O_CREAT | O_RDWR, 0o644)
            defer { close(fd) }
            o.call("allocate 64 KiB", Posix.fallocate(fd, 0, 0, 65536))
            o.fstat("f", fd, blocks: true)
            o.call("keep size beyond the end", Posix.fallocate(fd, Posix.FALLOC_FL_KEEP_SIZE, 65536, 65536))
            o.fstat("f", fd, blocks: true)
            o.call("fill 128 KiB", fill(fd, byte: 0x41, count: 131072, at: 0))
            o.call("punch 8 KiB at 4 KiB", Posix.fallocate(fd, Posix.FALLOC_FL_PUNCH_HOLE | Posix.FALLOC_FL_KEEP_SIZE, 4096, 8192))
            o.fstat("f", fd, blocks: true)
            o.note("content: " + contentOf(fd))
            o.note("pread in the hole: " + Posix.pread(fd, 4, 4096))
            o.call("punch without keep size", Posix.fallocate(fd, Posix.FALLOC_FL_PUNCH_HOLE, 0, 4096))
            o.call("zero range", Posix.fallocate(fd, Posix.FALLOC_FL_ZERO_RANGE, 16384, 4096))
            o.note("content: " + contentOf(fd))
            o.call("length 0", Posix.fallocate(fd, 0, 0, 0))
            o.call("negative offset", Posix.fallocate(fd, 0, -1, 4096))
            o.call("unknown mode", Posix.fallocate(fd, 0x4000, 0, 4096))
            let ro = Glibc.open("\(root)/f", O_RDONLY)
            o.call("on a read-only fd", Posix.fallocate(ro, 0, 0, 4096))
            close(ro)
            let lower = Glibc.open("\(root)/lower.bin", O_RDWR)
            o.call("punch a lower file", Posix.fallocate(lower, Posix.FALLOC_FL_PUNCH_HOLE | Posix.FALLOC_FL_KEEP_SIZE, 0, 5))
            o.note("lower: " + contentOf(lower))
            close(lower)
            return o
        },
        ConformanceCheck("fallocate collapse and insert range",
                         knownDifference: "the kernel's FUSE client refuses fallocate modes other than KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE with EOPNOTSUPP before the daemon sees them") { root in
            var o = Outcome()
            let fd = Glibc.open("\(root)/f", O_CREAT | O_RDWR, 0o644)
            defer { close(fd) }
            for block in 0..<8 { _ = fill(fd, byte: UInt8(0x30 + block), count: 4096, at: off_t(block * 4096)) }
            o.call("collapse 4 KiB at 8 KiB", Posix.fallocate(fd, Posix.FALLOC_FL_COLLAPSE_RANGE, 8192, 4096))
            o.call("insert 4 KiB at 4 KiB", Posix.fallocate(fd, Posix.FALLOC_FL_INSERT_RANGE, 4096, 4096))
            o.fstat("f", fd)
            o.note("content: " + contentOf(fd))
            return o
        },
        ConformanceCheck("sparse files, SEEK_DATA and SEEK_HOLE") { root in
            var o = Outcome()
            let fd = Glibc.open("\(root)/sparse", O_CREAT | O_RDWR, 0o644)
            defer { close(fd) }
            o.call("write at 0", fill(fd, byte: 1, count: 4096, at: 0))
            o.call("write at 1 MiB", fill(fd, byte: 2, count: 4096, at: 1 << 20))
            o.call("write at 8 MiB", fill(fd, byte: 3, count: 4096, at: 8 << 20))
            o.fstat("sparse", fd, blocks: true)
            for start: off_t in [0, 4096, 5000, (1 << 20) + 4096, 8 << 20, (8 << 20) + 4096, (8 << 20) + 9000] {
                o.call("SEEK_DATA from \(start)", lseek(fd, start, Posix.SEEK_DATA))
                o.call("SEEK_HOLE from \(start)", lseek(fd, start, Posix.SEEK_HOLE))
            }
            o.call("SEEK_END", lseek(fd, 0, SEEK_END))
            o.call("SEEK_SET negative", lseek(fd, -1, SEEK_SET))
            o.note("hole reads zeros: " + Posix.pread(fd, 8, 65536))
            let lower = Glibc.open("\(root)/lower.bin", O_RDONLY)
            o.call("SEEK_HOLE in a lower file", lseek(lower, 0, Posix.SEEK_HOLE))
            close(lower)
            return o
        },
        ConformanceCheck("files beyond 4 GiB (sparse)") { root in
            var o = Outcome()
            let fd = Glibc.open("\(root)/big", O_CREAT | O_RDWR, 0o644)
            defer { close(fd) }
            let end: off_t = 5 << 30
            o.call("pwrite at 5 GiB - 3", Posix.pwrite(fd, "end", end - 3))
            o.fstat("big", fd, blocks: true)
            o.note("pread at 5 GiB - 3: " + Posix.pread(fd, 8, end - 3))
            o.note("pread at 4 GiB: " + Posix.pread(fd, 4, 4 << 30))
            o.call("SEEK_DATA from 0", lseek(fd, 0, Posix.SEEK_DATA))
            o.call("SEEK_HOLE from 0", lseek(fd, 0, Posix.SEEK_HOLE))
            o.call("ftruncate to 4 GiB + 1", ftruncate(fd, (4 << 30) + 1))
            o.fstat("big", fd, blocks: true)
            o.call("ftruncate to 6 GiB", ftruncate(fd, 6 << 30))
            o.call("write at 4 GiB + 4095", Posix.pwrite(fd, "xy", (4 << 30) + 4095))
            o.note("pread across a 4 GiB page: " + Posix.pread(fd, 4, (4 << 30) + 4094))
            o.call("SEEK_END", lseek(fd, 0, SEEK_END))
            o.stat("big", "\(root)/big", blocks: true)
            o.call("write at 16 TiB (ext4 limit)", Posix.pwrite(fd, "x", 16 << 40))
            return o
        },
        ConformanceCheck("file unlinked while open") { root in
            var o = Outcome()
            let fd = Glibc.open("\(root)/gone", O_CREAT | O_RDWR, 0o644)
            defer { close(fd) }
            o.call("write before", Posix.write(fd, "before"))
            o.call("unlink", unlink("\(root)/gone"))
            o.stat("gone", "\(root)/gone")
            o.call("write after", Posix.write(fd, "after"))
            o.note("pread: " + Posix.pread(fd, 64, 0))
            o.fstat("gone", fd)
            o.call("fchmod", fchmod(fd, 0o600))
            o.call("ftruncate", ftruncate(fd, 3))
            o.call("fsync", fsync(fd))
            o.fstat("gone", fd)
            o.note("pread: " + Posix.pread(fd, 64, 0))
            let second = Glibc.open("/proc/self/fd/\(fd)", O_RDONLY)
            o.note("reopen through /proc: " + (second < 0 ? ErrnoName.of(errno) : Posix.pread(second, 64, 0)))
            if second >= 0 { close(second) }
            let lower = Glibc.open("\(root)/lower.bin", O_RDONLY)
            o.call("unlink an open lower file", unlink("\(root)/lower.bin"))
            o.note("lower pread: " + Posix.pread(lower, 64, 0))
            close(lower)
            o.stat("lower.bin", "\(root)/lower.bin")
            return o
        },
        ConformanceCheck("shared mmap writes seen by read") { root in
            var o = Outcome()
            let fd = Glibc.open("\(root)/m", O_CREAT | O_RDWR, 0o644)
            o.call("ftruncate 8 KiB", ftruncate(fd, 8192))
            let reader = Glibc.open("\(root)/m", O_RDONLY)
            defer { close(reader) }
            guard let map = mmap(nil, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != Posix.mapFailed else {
                o.note("mmap: \(ErrnoName.of(errno))")
                close(fd)
                return o
            }
            _ = "mmap-data".withCString { memcpy(map + 100, $0, 9) }
            _ = "page-two".withCString { memcpy(map + 5000, $0, 8) }
            o.note("read before msync: " + Posix.pread(reader, 9, 100) + " " + Posix.pread(reader, 8, 5000))
            o.call("msync", msync(map, 8192, MS_SYNC))
            o.call("pwrite", Posix.pwrite(fd, "WRITE", 200))
            o.note("mapping sees pwrite: " + Outcome.render((0..<5).map { map.load(fromByteOffset: 200 + $0, as: UInt8.self) }))
            o.call("munmap", munmap(map, 8192))
            close(fd)
            o.stat("m", "\(root)/m")
            let again = Glibc.open("\(root)/m", O_RDONLY)
            o.note("after reopen: " + Posix.pread(again, 9, 100) + " " + Posix.pread(again, 5, 200))
            close(again)
            let lower = Glibc.open("\(root)/lower.bin", O_RDWR)
            if let lmap = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, lower, 0), lmap != Posix.mapFailed {
                _ = "LOWER".withCString { memcpy(lmap, $0, 5) }
                o.call("msync lower", msync(lmap, 4096, MS_SYNC))
                munmap(lmap, 4096)
            } else {
                o.note("mmap lower: \(ErrnoName.of(errno))")
            }
            close(lower)
            o.content("lower.bin", "\(root)/lower.bin")
            return o
        },
        ConformanceCheck("fsync, fdatasync, syncfs") { root in
            var o = Outcome()
            let fd = Glibc.open("\(root)/s", O_CREAT | O_RDWR, 0o644)
            o.call("write", Posix.write(fd, "data"))
            o.call("fsync", fsync(fd))
            o.call("fdatasync", fdatasync(fd))
            o.call("syncfs", Posix.syncfs(fd))
            close(fd)
            let ro = Glibc.open("\(root)/s", O_RDONLY)
            o.call("fsync read-only", fsync(ro))
            o.call("fdatasync read-only", fdatasync(ro))
            close(ro)
            let dir = Glibc.open(root, O_RDONLY | O_DIRECTORY)
            o.call("fsync dir", fsync(dir))
            o.call("fdatasync dir", fdatasync(dir))
            close(dir)
            let lower = Glibc.open("\(root)/lower.bin", O_RDONLY)
            o.call("fsync a lower file", fsync(lower))
            close(lower)
            let path = Glibc.open("\(root)/s", Posix.O_PATH)
            o.call("fsync an O_PATH fd", fsync(path))
            close(path)
            return o
        },
    ]
}
