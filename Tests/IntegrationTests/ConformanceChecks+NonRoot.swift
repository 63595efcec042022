import Foundation
import Glibc

/// Permission checks for callers other than root (forked children with uid 1000/1001, no groups).
extension ConformanceChecks {
    static let nonRoot: [ConformanceCheck] = [
        ConformanceCheck("permission checks for a non-root caller") { root in
            var o = Outcome()
            mkdir("\(root)/priv", 0o700)
            Posix.writeFile("\(root)/priv/x", "x")
            Posix.writeFile("\(root)/secret", "secret", mode: 0o600)
            Posix.writeFile("\(root)/ro", "ro", mode: 0o644)
            mkdir("\(root)/rootdir", 0o755)
            mkdir("\(root)/noexec", 0o766)
            Posix.writeFile("\(root)/noexec/y", "y")
            mkdir("\(root)/pub", 0o777)
            Posix.writeFile("\(root)/mine", "mine", mode: 0o644)
            chown("\(root)/mine", 1000, 1000)
            Posix.writeFile("\(root)/grp", "grp", mode: 0o640)
            chown("\(root)/grp", 0, 1000)
            Posix.writeFile("\(root)/exec", "#!/bin/sh\n", mode: 0o755)
            Posix.writeFile("\(root)/suid", "suid", mode: 0o6777)
            _ = Posix.setxattr("\(root)/ro", "trusted.t", Array("t".utf8))
            _ = Posix.setxattr("\(root)/ro", "user.u", Array("u".utf8))
            o.merge(Posix.asUser(1000, 1000, in: root) {
                var u = Outcome()
                func openClose(_ label: String, _ path: String, _ flags: Int32, _ mode: mode_t = 0o644) {
                    let fd = u.fd(label, Glibc.open(path, flags, mode))
                    if fd >= 0 { close(fd) }
                }
                openClose("read secret", "secret", O_RDONLY)
                openClose("read ro", "ro", O_RDONLY)
                openClose("write ro", "ro", O_WRONLY)
                openClose("rdwr|trunc ro", "ro", O_RDWR | O_TRUNC)
                openClose("read grp (group)", "grp", O_RDONLY)
                openClose("write grp", "grp", O_WRONLY)
                openClose("read a lower file", "lower.bin", O_RDONLY)
                openClose("write a lower file", "lower.bin", O_WRONLY)
                u.stat("priv/x", "priv/x")
                openClose("list priv", "priv", O_RDONLY | O_DIRECTORY)
                u.stat("noexec/y (no search permission)", "noexec/y")
                openClose("list noexec (read permission)", "noexec", O_RDONLY | O_DIRECTORY)
                openClose("create in rootdir", "rootdir/new", O_CREAT | O_WRONLY)
                u.call("mkdir in rootdir", mkdir("rootdir/d", 0o755))
                u.call("symlink in rootdir", symlink("x", "rootdir/l"))
                u.call("mkfifo in rootdir", mkfifo("rootdir/p", 0o644))
                u.call("link into rootdir", link("mine", "rootdir/l"))
                u.call("rename into rootdir", rename("mine", "rootdir/mine"))
                u.call("unlink ro (dir not writable)", unlink("ro"))
                u.call("chmod ro", chmod("ro", 0o777))
                u.call("chown mine to 1001", chown("mine", 1001, 1000))
                u.call("chown mine to group 1001", chown("mine", uid_t.max, 1001))
                u.call("chown mine unchanged", chown("mine", 1000, 1000))
                u.call("chmod mine 02644 (own group)", chmod("mine", 0o2644))
                u.stat("mine", "mine")
                u.call("truncate ro", truncate("ro", 0))
                u.call("truncate mine", truncate("mine", 1))
                u.call("utimensat now on ro", utimensat(AT_FDCWD, "ro", nil, 0))
                var times = [timespec(tv_sec: 1, tv_nsec: 1), timespec(tv_sec: 2, tv_nsec: 2)]
                u.call("utimensat explicit on ro", utimensat(AT_FDCWD, "ro", &times, 0))
                u.call("utimensat explicit on mine", utimensat(AT_FDCWD, "mine", &times, 0))
                u.stat("mine", "mine", times: true)
                u.call("utimensat now on pub (writable, not owner)", utimensat(AT_FDCWD, "pub", nil, 0))
                u.call("utimensat explicit on pub", utimensat(AT_FDCWD, "pub", &times, 0))
                u.call("access ro W_OK", access("ro", W_OK))
                u.call("access exec X_OK", access("exec", X_OK))
                u.call("access secret R_OK", access("secret", R_OK))
                openClose("create pub/u", "pub/u", O_CREAT | O_EXCL | O_WRONLY, 0o666)
                u.stat("pub/u", "pub/u")
                u.call("mkdir pub/ud", mkdir("pub/ud", 0o777))
                u.stat("pub/ud", "pub/ud")
                u.call("mknod a device", mknod("pub/dev", S_IFCHR | 0o600, 0x103))
                u.call("mkfifo pub/p", mkfifo("pub/p", 0o666))
                u.stat("pub/p", "pub/p")
                u.call("user. xattr on ro", Posix.setxattr("ro", "user.x", [1]))
                u.call("user. xattr on mine", Posix.setxattr("mine", "user.x", [1]))
                u.note("get user.u of ro: " + Posix.getxattr("ro", "user.u"))
                u.call("trusted. xattr on mine", Posix.setxattr("mine", "trusted.x", [1]))
                u.note("get trusted.t of ro: " + Posix.getxattr("ro", "trusted.t"))
                u.note("list ro: " + Posix.listxattr("ro"))
                u.call("security.capability on mine", Posix.setxattr("mine", "security.capability", netRawCapability))
                let suid = u.fd("open suid for writing", Glibc.open("suid", O_WRONLY))
                if suid >= 0 {
                    u.call("write (drops setuid/setgid)", Posix.write(suid, "w"))
                    close(suid)
                }
                u.stat("suid", "suid")
                return u
            }, prefix: "uid 1000:")
            o.stat("pub", "\(root)/pub")
            return o
        },
        ConformanceCheck("sticky bit") { root in
            var o = Outcome()
            mkdir("\(root)/s", 0o777)
            o.call("chmod 01777", chmod("\(root)/s", 0o1777))
            Posix.writeFile("\(root)/s/rootfile", "r", mode: 0o666)
            Posix.writeFile("\(root)/s/u1000", "u", mode: 0o666)
            chown("\(root)/s/u1000", 1000, 1000)
            mkdir("\(root)/s/d1000", 0o777)
            chown("\(root)/s/d1000", 1000, 1000)
            o.merge(Posix.asUser(1001, 1001, in: root) {
                var u = Outcome()
                u.call("unlink another user's file", unlink("s/u1000"))
                u.call("rename another user's file", rename("s/u1000", "s/mine"))
                u.call("unlink root's file", unlink("s/rootfile"))
                u.call("rmdir another user's dir", rmdir("s/d1000"))
                u.call("rename own file over another's", Posix.writeFile("s/own", "o"))
                u.call("rename over another user's file", rename("s/own", "s/u1000"))
                u.call("write another user's 0666 file", Posix.writeFile("s/u1000", "w"))
                u.call("unlink own file", unlink("s/own"))
                return u
            }, prefix: "uid 1001:")
            o.merge(Posix.asUser(1000, 1000, in: root) {
                var u = Outcome()
                u.call("unlink own file", unlink("s/u1000"))
                u.call("rmdir own dir", rmdir("s/d1000"))
                return u
            }, prefix: "uid 1000:")
            o.stat("s", "\(root)/s")
            o.note("left: " + listing("\(root)/s").sorted().joined(separator: " "))
            return o
        },
    ]
}
