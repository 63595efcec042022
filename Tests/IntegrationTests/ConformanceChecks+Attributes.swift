import Foundation
import Glibc

/// Modes, owners, setgid inheritance, times, sizes, statfs.
extension ConformanceChecks {
    static func times(_ path: String, _ atime: timespec, _ mtime: timespec, flags: Int32 = 0) -> Int32 {
        var pair = [atime, mtime]
        return utimensat(AT_FDCWD, path, &pair, flags)
    }

    static let attributes: [ConformanceCheck] = [
        ConformanceCheck("chmod and chown") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/f", "f")
            for mode: mode_t in [0o4755, 0o2755, 0o1777, 0o7777, 0o0000, 0o644] {
                o.call("chmod \(String(mode, radix: 8))", chmod("\(root)/f", mode))
                o.stat("f", "\(root)/f")
            }
            chmod("\(root)/f", 0o6755)
            o.call("chown 1000:1000 a setuid+setgid file", chown("\(root)/f", 1000, 1000))
            o.stat("f", "\(root)/f")
            chmod("\(root)/f", 0o6745)
            o.call("chown without change", chown("\(root)/f", uid_t.max, gid_t.max))
            o.stat("f", "\(root)/f")
            o.call("chown gid only", chown("\(root)/f", uid_t.max, 1234))
            o.stat("f", "\(root)/f")
            o.call("chmod a lower file", chmod("\(root)/lower.bin", 0o600))
            o.call("chown a lower file", chown("\(root)/lower.bin", 7, 8))
            o.stat("lower.bin", "\(root)/lower.bin")
            o.content("lower.bin", "\(root)/lower.bin")
            o.call("chmod a lower dir", chmod("\(root)/lowerdir", 0o1733))
            o.stat("lowerdir", "\(root)/lowerdir")
            mkdir("\(root)/d", 0o2755)
            o.call("chown a setgid dir", chown("\(root)/d", 1000, 1000))
            o.stat("d", "\(root)/d")
            let fd = Glibc.open("\(root)/f", O_RDONLY)
            o.call("fchmod", fchmod(fd, 0o640))
            o.call("fchown", fchown(fd, 3, 4))
            o.fstat("f", fd)
            close(fd)
            o.call("chmod missing", chmod("\(root)/missing", 0o600))
            return o
        },
        ConformanceCheck("setgid directory inheritance") { root in
            var o = Outcome()
            mkdir("\(root)/g", 0o755)
            o.call("chown g to group 1234", chown("\(root)/g", 0, 1234))
            o.call("chmod g 02777", chmod("\(root)/g", 0o2777))
            let fd = o.fd("create g/f", Glibc.open("\(root)/g/f", O_CREAT | O_WRONLY, 0o644))
            if fd >= 0 { close(fd) }
            o.stat("g/f", "\(root)/g/f")
            o.call("mkdir g/sub", mkdir("\(root)/g/sub", 0o755))
            o.stat("g/sub", "\(root)/g/sub")
            o.call("mkfifo g/p", mkfifo("\(root)/g/p", 0o644))
            o.stat("g/p", "\(root)/g/p")
            o.call("symlink g/l", symlink("f", "\(root)/g/l"))
            o.stat("g/l", "\(root)/g/l")
            o.call("create g/sub/deep", Posix.writeFile("\(root)/g/sub/deep", "d"))
            o.stat("g/sub/deep", "\(root)/g/sub/deep")
            o.merge(Posix.asUser(1000, 1000, in: root) {
                var u = Outcome()
                u.call("create g/u", Posix.writeFile("g/u", "u", mode: 0o2755))
                u.stat("g/u", "g/u")
                u.call("mkdir g/ud", mkdir("g/ud", 0o755))
                u.stat("g/ud", "g/ud")
                u.call("chmod g/u g+s (not in group 1234)", chmod("g/u", 0o2755))
                u.stat("g/u", "g/u")
                return u
            }, prefix: "uid 1000:")
            return o
        },
        ConformanceCheck("utimensat with nanoseconds, UTIME_NOW and UTIME_OMIT") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/f", "f")
            let omit = timespec(tv_sec: 0, tv_nsec: Posix.UTIME_OMIT), now = timespec(tv_sec: 0, tv_nsec: Posix.UTIME_NOW)
            o.call("set both", times("\(root)/f", timespec(tv_sec: 1_000_000, tv_nsec: 123_456_789),
                                     timespec(tv_sec: 2_000_000, tv_nsec: 987_654_321)))
            o.stat("f", "\(root)/f", times: true)
            o.call("omit atime, set mtime", times("\(root)/f", omit, timespec(tv_sec: 3_000_000, tv_nsec: 1)))
            o.stat("f", "\(root)/f", times: true)
            o.call("omit both", times("\(root)/f", omit, omit))
            o.stat("f", "\(root)/f", times: true)
            var before = timespec()
            clock_gettime(CLOCK_REALTIME, &before)
            o.call("now mtime, omit atime", times("\(root)/f", omit, now))
            var st = Glibc.stat()
            lstat("\(root)/f", &st)
            o.note("atime kept: \(st.st_atim.tv_sec == 1_000_000 && st.st_atim.tv_nsec == 123_456_789)")
            o.note("mtime is now: \(st.st_mtim.tv_sec >= before.tv_sec - 1 && st.st_mtim.tv_sec <= before.tv_sec + 5)")
            o.call("nsec out of range", times("\(root)/f", timespec(tv_sec: 1, tv_nsec: 1_000_000_000), omit))
            o.call("negative nsec", times("\(root)/f", timespec(tv_sec: 1, tv_nsec: -1), omit))
            o.call("before 1970", times("\(root)/f", timespec(tv_sec: -86_400, tv_nsec: 5), timespec(tv_sec: -1, tv_nsec: 0)))
            o.stat("f", "\(root)/f", times: true)
            o.call("after 2038", times("\(root)/f", timespec(tv_sec: 4_102_444_800, tv_nsec: 7), timespec(tv_sec: 4_102_444_800, tv_nsec: 8)))
            o.stat("f", "\(root)/f", times: true)
            symlink("f", "\(root)/l")
            o.call("symlink nofollow", times("\(root)/l", timespec(tv_sec: 5, tv_nsec: 5), timespec(tv_sec: 6, tv_nsec: 6),
                                             flags: AT_SYMLINK_NOFOLLOW))
            o.stat("l", "\(root)/l", times: true)
            o.stat("f", "\(root)/f", times: true)
            let fd = Glibc.open("\(root)/f", O_RDONLY)
            var pair = [timespec(tv_sec: 7, tv_nsec: 700), timespec(tv_sec: 8, tv_nsec: 800)]
            o.call("futimens", futimens(fd, &pair))
            o.fstat("f", fd, times: true)
            close(fd)
            o.call("lower file", times("\(root)/lower.bin", timespec(tv_sec: 9, tv_nsec: 9), timespec(tv_sec: 10, tv_nsec: 10)))
            o.stat("lower.bin", "\(root)/lower.bin", times: true)
            o.call("lower dir", times("\(root)/lowerdir", timespec(tv_sec: 11, tv_nsec: 11), timespec(tv_sec: 12, tv_nsec: 12)))
            o.stat("lowerdir", "\(root)/lowerdir", times: true)
            return o
        },
        ConformanceCheck("truncate and ftruncate") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/f", "0123456789")
            o.call("truncate to 5", truncate("\(root)/f", 5))
            o.content("f", "\(root)/f")
            o.call("truncate to 12", truncate("\(root)/f", 12))
            o.content("f", "\(root)/f")
            o.call("truncate to -1", truncate("\(root)/f", -1))
            o.call("truncate a dir", truncate("\(root)/lowerdir", 0))
            o.call("truncate missing", truncate("\(root)/missing", 0))
            o.call("truncate a lower file", truncate("\(root)/lower.bin", 3))
            o.content("lower.bin", "\(root)/lower.bin")
            let ro = Glibc.open("\(root)/f", O_RDONLY)
            o.call("ftruncate a read-only fd", ftruncate(ro, 1))
            close(ro)
            let fd = Glibc.open("\(root)/f", O_RDWR)
            o.call("ftruncate to 1 MiB", ftruncate(fd, 1 << 20))
            o.fstat("f", fd)
            o.call("ftruncate to 2", ftruncate(fd, 2))
            o.note("pread: " + Posix.pread(fd, 16, 0))
            o.call("ftruncate to 3 (zero filled)", ftruncate(fd, 3))
            o.note("pread: " + Posix.pread(fd, 16, 0))
            close(fd)
            mkfifo("\(root)/p", 0o600)
            o.call("truncate a fifo", truncate("\(root)/p", 0))
            symlink("f", "\(root)/l")
            o.call("truncate through a symlink", truncate("\(root)/l", 1))
            o.stat("f", "\(root)/f")
            return o
        },
        ConformanceCheck("statfs") { root in
            var o = Outcome()
            var fs = statvfs()
            o.call("statvfs", statvfs(root, &fs))
            // Not the totals: a sandbox reports the image's use on top of its mount's (overlayfs counts its upper only).
            o.note("bsize=\(fs.f_bsize) frsize=\(fs.f_frsize) namemax=\(fs.f_namemax)")
            o.note("bavail<=bfree: \(fs.f_bavail <= fs.f_bfree) bfree<=blocks: \(fs.f_bfree <= fs.f_blocks) ffree<=files: \(fs.f_ffree <= fs.f_files)")
            var ofFile = statvfs()
            o.call("statvfs of a file", statvfs("\(root)/lower.bin", &ofFile))
            o.note("same blocks: \(ofFile.f_blocks == fs.f_blocks)")
            let fd = Glibc.open(root, O_RDONLY | O_DIRECTORY)
            var ofFD = statvfs()
            o.call("fstatvfs", fstatvfs(fd, &ofFD))
            close(fd)
            o.note("same blocks: \(ofFD.f_blocks == fs.f_blocks)")
            o.call("statvfs missing", statvfs("\(root)/missing", &ofFD))
            return o
        },
    ]
}
