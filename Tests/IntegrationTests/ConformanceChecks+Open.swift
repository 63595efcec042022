import Foundation
import Glibc

/// The table of checks, one family per file.
enum ConformanceChecks {}

extension ConformanceChecks {
    static let open: [ConformanceCheck] = [
        ConformanceCheck("open O_CREAT|O_EXCL") { root in
            var o = Outcome()
            let fd = o.fd("create excl", Glibc.open("\(root)/a", O_CREAT | O_EXCL | O_WRONLY, 0o640))
            if fd >= 0 { close(fd) }
            o.stat("a", "\(root)/a")
            o.call("create excl again", Glibc.open("\(root)/a", O_CREAT | O_EXCL | O_WRONLY, 0o640))
            o.call("excl on a lower file", Glibc.open("\(root)/lower.bin", O_CREAT | O_EXCL | O_RDWR, 0o600))
            o.call("excl on a directory", Glibc.open("\(root)/lowerdir", O_CREAT | O_EXCL | O_RDONLY, 0o600))
            o.call("symlink dangling", symlink("missing", "\(root)/dl"))
            o.call("excl on a dangling symlink", Glibc.open("\(root)/dl", O_CREAT | O_EXCL | O_WRONLY, 0o600))
            o.stat("missing before", "\(root)/missing")
            let created = o.fd("creat through a dangling symlink", Glibc.open("\(root)/dl", O_CREAT | O_WRONLY, 0o600))
            if created >= 0 { close(created) }
            o.stat("missing after", "\(root)/missing")
            o.call("creat in a missing dir", Glibc.open("\(root)/nodir/x", O_CREAT | O_WRONLY, 0o600))
            let special = o.fd("create mode 07777", Glibc.open("\(root)/all", O_CREAT | O_EXCL | O_WRONLY, 0o7777))
            if special >= 0 { close(special) }
            o.stat("all", "\(root)/all")
            for length in [255, 256] {
                let fd = o.fd("creat name of \(length)", Glibc.open("\(root)/" + String(repeating: "n", count: length), O_CREAT | O_WRONLY, 0o600))
                if fd >= 0 { close(fd) }
                o.stat("name of \(length)", "\(root)/" + String(repeating: "n", count: length))
            }
            return o
        },
        ConformanceCheck("open O_TRUNC") { root in
            var o = Outcome()
            o.call("write", Posix.writeFile("\(root)/t", "hello world"))
            var fd = o.fd("open wronly trunc", Glibc.open("\(root)/t", O_WRONLY | O_TRUNC))
            o.fstat("after trunc", fd)
            o.call("write", Posix.write(fd, "abc"))
            close(fd)
            fd = o.fd("open rdonly trunc", Glibc.open("\(root)/t", O_RDONLY | O_TRUNC))
            o.fstat("after rdonly trunc", fd)
            close(fd)
            fd = o.fd("trunc a lower file", Glibc.open("\(root)/lower.bin", O_RDWR | O_TRUNC))
            o.fstat("lower after trunc", fd)
            o.call("write lower", Posix.write(fd, "new"))
            close(fd)
            o.content("lower", "\(root)/lower.bin")
            o.call("trunc a directory", Glibc.open("\(root)/lowerdir", O_WRONLY | O_TRUNC))
            return o
        },
        ConformanceCheck("open O_APPEND") { root in
            var o = Outcome()
            o.call("write", Posix.writeFile("\(root)/ap", "abc"))
            let fd = o.fd("open append", Glibc.open("\(root)/ap", O_WRONLY | O_APPEND))
            o.call("seek 0", lseek(fd, 0, SEEK_SET))
            o.call("write def", Posix.write(fd, "def"))
            o.call("offset after write", lseek(fd, 0, SEEK_CUR))
            // Linux appends pwrite on an O_APPEND fd whatever the offset (a documented bug).
            o.call("pwrite at 0", Posix.pwrite(fd, "X", 0))
            close(fd)
            o.content("ap", "\(root)/ap")
            let lower = o.fd("append to a lower file", Glibc.open("\(root)/lower.bin", O_WRONLY | O_APPEND))
            o.call("write", Posix.write(lower, "more\n"))
            close(lower)
            o.content("lower", "\(root)/lower.bin")
            let rw = o.fd("open rdwr append", Glibc.open("\(root)/ap", O_RDWR | O_APPEND))
            o.note("pread 0: " + Posix.pread(rw, 3, 0))
            close(rw)
            return o
        },
        // A known difference only for a binary built against libfuse older than 3.17 (plain `swift build` on
        // Debian 12 without Tools/libfuse), whose low-level API has no tmpfile operation.
        ConformanceCheck("open O_TMPFILE",
                         knownDifference: Environment.libfuseHas317 ? nil : "libfuse < 3.17 has no tmpfile operation: the kernel's FUSE_TMPFILE gets ENOSYS, which it turns into EOPNOTSUPP; the hidden mount supports O_TMPFILE") { root in
            var o = Outcome()
            o.call("tmpfile rdonly", Glibc.open(root, Posix.O_TMPFILE | O_RDONLY, 0o600))
            let fd = o.fd("tmpfile rdwr", Glibc.open(root, Posix.O_TMPFILE | O_RDWR, 0o600))
            guard fd >= 0 else { return o }
            defer { close(fd) }
            o.call("write", Posix.write(fd, "tmp"))
            o.fstat("tmpfile", fd)
            o.call("link it in", linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, "\(root)/linked", AT_SYMLINK_FOLLOW))
            o.stat("linked", "\(root)/linked")
            o.content("linked", "\(root)/linked")
            return o
        },
        ConformanceCheck("open O_DIRECTORY") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/file", "x")
            mkdir("\(root)/dir", 0o755)
            symlink("dir", "\(root)/dirlink")
            for (label, path, flags) in [("dir", "dir", O_RDONLY | O_DIRECTORY), ("file", "file", O_RDONLY | O_DIRECTORY),
                                         ("dir wronly", "dir", O_WRONLY), ("dir rdwr", "dir", O_RDWR),
                                         ("lower dir", "lowerdir", O_RDONLY | O_DIRECTORY),
                                         ("link to dir", "dirlink", O_RDONLY | O_DIRECTORY),
                                         ("link to dir nofollow", "dirlink", O_RDONLY | O_DIRECTORY | O_NOFOLLOW),
                                         ("creat directory", "newdir", O_RDONLY | O_DIRECTORY | O_CREAT),
                                         ("missing", "nothing", O_RDONLY | O_DIRECTORY)] {
                let fd = o.fd(label, Glibc.open("\(root)/\(path)", flags, 0o755))
                if fd >= 0 { close(fd) }
            }
            o.stat("newdir", "\(root)/newdir")
            return o
        },
        ConformanceCheck("open O_NOFOLLOW") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/target", "target\n")
            symlink("target", "\(root)/link")
            mkdir("\(root)/dir", 0o755)
            Posix.writeFile("\(root)/dir/inner", "inner\n")
            symlink("dir", "\(root)/dirlink")
            o.call("nofollow on a symlink", Glibc.open("\(root)/link", O_RDONLY | O_NOFOLLOW))
            let path = o.fd("O_PATH|O_NOFOLLOW on a symlink", Glibc.open("\(root)/link", Posix.O_PATH | O_NOFOLLOW))
            if path >= 0 {
                var st = Glibc.stat()
                o.call("fstatat empty path", fstatat(path, "", &st, Posix.AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
                o.note("O_PATH fd is " + Outcome.describe(st, blocks: false, times: false).prefix(3))
                close(path)
            }
            let followed = o.fd("follow a symlink", Glibc.open("\(root)/link", O_RDONLY))
            if followed >= 0 {
                o.note("read: " + Posix.pread(followed, 64, 0))
                close(followed)
            }
            let inner = o.fd("nofollow through a dir symlink", Glibc.open("\(root)/dirlink/inner", O_RDONLY | O_NOFOLLOW))
            if inner >= 0 { close(inner) }
            o.call("nofollow creat excl on a symlink", Glibc.open("\(root)/link", O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY, 0o600))
            o.call("nofollow creat on a symlink", Glibc.open("\(root)/link", O_CREAT | O_NOFOLLOW | O_WRONLY, 0o600))
            let plain = o.fd("nofollow on a file", Glibc.open("\(root)/target", O_RDONLY | O_NOFOLLOW))
            if plain >= 0 { close(plain) }
            return o
        },
    ]
}
