import Foundation
import Glibc

/// What pjdfstest checks and the other tables do not: which calls change mtime/ctime (observed as
/// "changed or not", never as values), set-id bits cleared by non-root callers, ownership rules,
/// ENAMETOOLONG, the error cases of name operations, mknod/mkfifo modes, sticky directories, fifo opens.
extension ConformanceChecks {
    /// mtime and ctime of `path` (not followed), nil when it cannot be stat'ed.
    static func stamps(_ path: String) -> (mtime: timespec, ctime: timespec)? {
        var st = Glibc.stat()
        guard lstat(path, &st) == 0 else { return nil }
        return (st.st_mtim, st.st_ctim)
    }

    static func same(_ a: timespec, _ b: timespec) -> Bool { a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec }

    /// Runs `call`, notes its result, then for each watched path whether its mtime and ctime changed.
    /// The kernels here use fine-grained timestamps once a time was read, so a change is always visible.
    @discardableResult
    static func watch(_ o: inout Outcome, _ label: String, _ paths: [String], _ call: () -> Int) -> Int {
        let before = paths.map { stamps($0) }
        let result = o.call(label, call())
        for (path, old) in zip(paths, before) {
            guard let old, let new = stamps(path) else {
                o.note("  \(path.split(separator: "/").last ?? ""): " + (old == nil ? "absent before" : "absent after"))
                continue
            }
            o.note("  \(path.split(separator: "/").last ?? ""): mtime \(same(old.mtime, new.mtime) ? "kept" : "changed"),"
                + " ctime \(same(old.ctime, new.ctime) ? "kept" : "changed")")
        }
        return result
    }

    static func watch(_ o: inout Outcome, _ label: String, _ paths: [String], _ call: () -> Int32) {
        watch(&o, label, paths) { Int(call()) }
    }

    static let pjd: [ConformanceCheck] = [
        ConformanceCheck("pjd: times on write, truncate, chmod, chown, xattrs, utimensat") { root in
            var o = Outcome()
            let f = "\(root)/f", parent = root + "/."
            Posix.writeFile(f, "0123456789")
            let fd = Glibc.open(f, O_RDWR)
            defer { close(fd) }
            watch(&o, "pwrite", [f, parent]) { Posix.pwrite(fd, "ab", 3) }
            watch(&o, "pwrite of 0 bytes", [f]) { Glibc.pwrite(fd, "", 0, 0) }
            watch(&o, "pread", [f]) { Posix.pread(fd, 4, 0).count }
            watch(&o, "ftruncate shrink", [f, parent]) { ftruncate(fd, 5) }
            watch(&o, "ftruncate same size", [f]) { ftruncate(fd, 5) }
            watch(&o, "truncate grow", [f]) { truncate(f, 9) }
            watch(&o, "truncate same size", [f]) { truncate(f, 9) }
            watch(&o, "truncate to EINVAL", [f]) { truncate(f, -1) }
            watch(&o, "chmod", [f, parent]) { chmod(f, 0o600) }
            watch(&o, "chmod same mode", [f]) { chmod(f, 0o600) }
            watch(&o, "chown", [f]) { chown(f, 1000, 1000) }
            watch(&o, "chown -1 -1", [f]) { chown(f, uid_t.max, gid_t.max) }
            watch(&o, "setxattr", [f]) { Posix.setxattr(f, "user.t", [1]) }
            watch(&o, "setxattr XATTR_CREATE on existing", [f]) { Posix.setxattr(f, "user.t", [2], Posix.XATTR_CREATE) }
            watch(&o, "removexattr", [f]) { Posix.lremovexattr(f, "user.t") }
            watch(&o, "removexattr missing", [f]) { Posix.lremovexattr(f, "user.t") }
            watch(&o, "utimensat explicit", [f]) {
                times(f, timespec(tv_sec: 100, tv_nsec: 0), timespec(tv_sec: 200, tv_nsec: 0))
            }
            watch(&o, "utimensat UTIME_OMIT both", [f]) {
                times(f, timespec(tv_sec: 0, tv_nsec: Posix.UTIME_OMIT), timespec(tv_sec: 0, tv_nsec: Posix.UTIME_OMIT))
            }
            watch(&o, "utimensat now", [f]) { utimensat(AT_FDCWD, f, nil, 0) }
            watch(&o, "open O_RDONLY", [f]) { () -> Int32 in
                let r = Glibc.open(f, O_RDONLY)
                if r >= 0 { close(r) }
                return r < 0 ? -1 : 0
            }
            watch(&o, "open O_WRONLY|O_TRUNC", [f, parent]) { () -> Int32 in
                let r = Glibc.open(f, O_WRONLY | O_TRUNC)
                if r >= 0 { close(r) }
                return r < 0 ? -1 : 0
            }
            watch(&o, "open O_WRONLY|O_TRUNC of an empty file", [f]) { () -> Int32 in
                let r = Glibc.open(f, O_WRONLY | O_TRUNC)
                if r >= 0 { close(r) }
                return r < 0 ? -1 : 0
            }
            watch(&o, "fallocate", [f]) { Posix.fallocate(fd, 0, 0, 8192) }
            watch(&o, "fallocate KEEP_SIZE", [f]) { Posix.fallocate(fd, Posix.FALLOC_FL_KEEP_SIZE, 8192, 8192) }
            watch(&o, "fsync", [f]) { fsync(fd) }
            // Not the parent here: overlayfs's copy-up changes the upper parent's ctime, which ext4 (and the
            // dm engine) never does; the FUSE side shows ext4's behaviour.
            watch(&o, "write to a lower file (copy-up)", ["\(root)/lower.bin"]) { () -> Int in
                let l = Glibc.open("\(root)/lower.bin", O_WRONLY | O_APPEND)
                defer { if l >= 0 { close(l) } }
                return Posix.write(l, "x")
            }
            watch(&o, "chmod a lower dir", ["\(root)/lowerdir"]) { chmod("\(root)/lowerdir", 0o700) }
            return o
        },
        ConformanceCheck("pjd: times on create, link, unlink, rename, rmdir") { root in
            var o = Outcome()
            mkdir("\(root)/a", 0o755)
            mkdir("\(root)/b", 0o755)
            let a = "\(root)/a/.", b = "\(root)/b/.", r = "\(root)/."
            watch(&o, "create a/f", [a, r]) { Posix.writeFile("\(root)/a/f", "f") }
            let f = "\(root)/a/f"
            watch(&o, "link a/f b/g", [f, a, b]) { link(f, "\(root)/b/g") }
            watch(&o, "link onto an existing name", [f, b]) { link(f, "\(root)/b/g") }
            watch(&o, "unlink b/g", [f, a, b]) { unlink("\(root)/b/g") }
            watch(&o, "unlink missing", [b]) { unlink("\(root)/b/g") }
            watch(&o, "rename a/f a/f2 (same dir)", [f, a]) { rename(f, "\(root)/a/f2") }
            watch(&o, "rename a/f2 b/f (across)", ["\(root)/a/f2", a, b]) { rename("\(root)/a/f2", "\(root)/b/f") }
            Posix.writeFile("\(root)/a/victim", "v")
            link("\(root)/a/victim", "\(root)/a/victim2")
            watch(&o, "rename b/f over a/victim (2 links)", ["\(root)/b/f", "\(root)/a/victim2", a, b]) {
                rename("\(root)/b/f", "\(root)/a/victim")
            }
            mkdir("\(root)/a/sub", 0o755)
            watch(&o, "rename dir a/sub b/sub", ["\(root)/a/sub", a, b]) { rename("\(root)/a/sub", "\(root)/b/sub") }
            watch(&o, "rename dir within b", ["\(root)/b/sub", b]) { rename("\(root)/b/sub", "\(root)/b/sub2") }
            watch(&o, "rename onto itself", ["\(root)/a/victim", a]) { rename("\(root)/a/victim", "\(root)/a/victim") }
            watch(&o, "rename a hard link onto its twin", ["\(root)/a/victim", a]) {
                rename("\(root)/a/victim2", "\(root)/a/victim")
            }
            watch(&o, "rename EXCHANGE", ["\(root)/a/victim", "\(root)/b/sub2", a, b]) {
                Posix.renameat2(AT_FDCWD, "\(root)/a/victim", AT_FDCWD, "\(root)/b/sub2", Posix.RENAME_EXCHANGE)
            }
            watch(&o, "rename ENOENT", [a, b]) { rename("\(root)/a/none", "\(root)/b/none") }
            watch(&o, "mkdir b/d", [b, r]) { mkdir("\(root)/b/d", 0o755) }
            o.stat("b", "\(root)/b")
            watch(&o, "mkdir existing", [b]) { mkdir("\(root)/b/d", 0o755) }
            watch(&o, "rmdir b/d", [b]) { rmdir("\(root)/b/d") }
            o.stat("b", "\(root)/b")
            watch(&o, "symlink b/l", [b]) { symlink("x", "\(root)/b/l") }
            watch(&o, "mkfifo b/p", [b]) { mkfifo("\(root)/b/p", 0o644) }
            watch(&o, "mknod b/n", [b]) { mknod("\(root)/b/n", S_IFCHR | 0o600, 0x103) }
            watch(&o, "setxattr on a dir", [b]) { Posix.setxattr("\(root)/b", "user.d", [1]) }
            watch(&o, "unlink a lower file", ["\(root)/lowerdir/inner", "\(root)/lowerdir/."]) {
                unlink("\(root)/lowerdir/inner")
            }
            watch(&o, "rename a lower dir", ["\(root)/lowerdir", r]) { rename("\(root)/lowerdir", "\(root)/moved") }
            return o
        },
        ConformanceCheck("pjd: set-id bits cleared by non-root write, truncate and chown") { root in
            var o = Outcome()
            for name in ["w", "w2", "t", "t2", "ft", "c", "cg", "nx", "cn", "tr", "tr2", "d"] {
                Posix.writeFile("\(root)/\(name)", "data")
                chown("\(root)/\(name)", 1000, 1000)
                chmod("\(root)/\(name)", 0o6755)
            }
            // Group 1234, not the owner's: setgid without group-exec is dropped only for non-members.
            chown("\(root)/nx", 1000, 1234)
            chmod("\(root)/nx", 0o2745)
            chmod("\(root)/cg", 0o2745)
            chown("\(root)/cn", 1000, 1234)
            chmod("\(root)/cn", 0o6745)
            for name in ["w2", "t2", "tr2"] {
                chown("\(root)/\(name)", 1000, 1234)
                chmod("\(root)/\(name)", 0o2745)
            }
            Posix.writeFile("\(root)/rootw", "data", mode: 0o6777)
            mkdir("\(root)/sd", 0o6777)
            chown("\(root)/sd", 1000, 1000)
            o.merge(Posix.asUser(1000, 1000, in: root) {
                var u = Outcome()
                let w = Glibc.open("w", O_WRONLY)
                u.call("write own 06755", Posix.write(w, "x"))
                close(w)
                u.stat("w", "w")
                let w2 = Glibc.open("w2", O_WRONLY)
                u.call("write own 02745 of group 1234", Posix.write(w2, "x"))
                close(w2)
                u.stat("w2", "w2")
                u.call("truncate own 02745 of group 1234", truncate("t2", 1))
                u.stat("t2", "t2")
                let tr2 = Glibc.open("tr2", O_WRONLY | O_TRUNC)
                u.call("open O_TRUNC own 02745 of group 1234", tr2, value: false)
                if tr2 >= 0 { close(tr2) }
                u.stat("tr2", "tr2")
                u.call("truncate own 06755", truncate("t", 1))
                u.stat("t", "t")
                let ft = Glibc.open("ft", O_WRONLY)
                u.call("ftruncate own 06755", ftruncate(ft, 1))
                close(ft)
                u.stat("ft", "ft")
                u.call("chown own 06755 to -1 1000", chown("c", uid_t.max, 1000))
                u.stat("c", "c")
                u.call("chown own 02745 to -1 1000", chown("cg", uid_t.max, 1000))
                u.stat("cg", "cg")
                u.call("chown own 02745 of group 1234 to -1 -1", chown("nx", uid_t.max, gid_t.max))
                u.stat("nx", "nx")
                u.call("chown own 06745 of group 1234 to -1 1000", chown("cn", uid_t.max, 1000))
                u.stat("cn", "cn")
                let tr = Glibc.open("tr", O_WRONLY | O_TRUNC)
                u.call("open O_TRUNC own 06755", tr, value: false)
                if tr >= 0 { close(tr) }
                u.stat("tr", "tr")
                u.call("chmod own dir 06777 to 06755", chmod("sd", 0o6755))
                u.stat("sd", "sd")
                u.call("chown own dir -1 1000", chown("sd", uid_t.max, 1000))
                u.stat("sd", "sd")
                let rw = Glibc.open("rootw", O_WRONLY)
                u.call("write root's 06777", Posix.write(rw, "x"))
                close(rw)
                u.stat("rootw", "rootw")
                return u
            }, prefix: "uid 1000:")
            // Root keeps the bits on write and truncate (CAP_FSETID); chown clears them.
            let d = Glibc.open("\(root)/d", O_WRONLY)
            o.call("root write 06755", Posix.write(d, "x"))
            o.call("root ftruncate 06755", ftruncate(d, 2))
            close(d)
            o.stat("d", "\(root)/d")
            o.call("root chown -1 -1", chown("\(root)/d", uid_t.max, gid_t.max))
            o.stat("d", "\(root)/d")
            o.call("root chown 1000 1000 (same)", chown("\(root)/d", 1000, 1000))
            o.stat("d", "\(root)/d")
            chmod("\(root)/d", 0o2745)
            o.call("root chown 02745 to 0 0", chown("\(root)/d", 0, 0))
            o.stat("d", "\(root)/d")
            return o
        },
        ConformanceCheck("pjd: ownership and time-setting rules for non-root callers") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/mine", "m", mode: 0o644)
            chown("\(root)/mine", 1000, 1000)
            Posix.writeFile("\(root)/other", "o", mode: 0o666)
            chown("\(root)/other", 1001, 1001)
            Posix.writeFile("\(root)/closed", "c", mode: 0o644)
            chown("\(root)/closed", 1001, 1001)
            Posix.writeFile("\(root)/sg", "s", mode: 0o644)
            chown("\(root)/sg", 1000, 2000)
            o.merge(Posix.asUser(1000, 1000, groups: [1000, 2000], in: root) {
                var u = Outcome()
                watch(&u, "chown other's file to me", ["other"]) { chown("other", 1000, uid_t.max) }
                watch(&u, "chown other's file -1 -1", ["other"]) { chown("other", uid_t.max, gid_t.max) }
                watch(&u, "chown mine to uid 1001", ["mine"]) { chown("mine", 1001, uid_t.max) }
                watch(&u, "chown mine to group 3000 (not a member)", ["mine"]) { chown("mine", uid_t.max, 3000) }
                watch(&u, "chown mine to group 2000 (supplementary)", ["mine"]) { chown("mine", uid_t.max, 2000) }
                u.stat("mine", "mine")
                watch(&u, "chown mine to 1000:1000 (own uid, primary group)", ["mine"]) { chown("mine", 1000, 1000) }
                u.stat("mine", "mine")
                watch(&u, "chmod other's file", ["other"]) { chmod("other", 0o600) }
                watch(&u, "chmod mine 02644 (primary group)", ["mine"]) { chmod("mine", 0o2644) }
                u.stat("mine", "mine")
                watch(&u, "chmod sg 02644 (supplementary group)", ["sg"]) { chmod("sg", 0o2644) }
                u.stat("sg", "sg")
                watch(&u, "chmod mine 01644 (sticky on a file)", ["mine"]) { chmod("mine", 0o1644) }
                u.stat("mine", "mine")
                let omit = timespec(tv_sec: 0, tv_nsec: Posix.UTIME_OMIT), now = timespec(tv_sec: 0, tv_nsec: Posix.UTIME_NOW)
                let at = timespec(tv_sec: 5000, tv_nsec: 0)
                watch(&u, "utimensat explicit, writable, not owner", ["other"]) { times("other", at, at) }
                watch(&u, "utimensat NULL, writable, not owner", ["other"]) { utimensat(AT_FDCWD, "other", nil, 0) }
                watch(&u, "utimensat NOW NOW, writable, not owner", ["other"]) { times("other", now, now) }
                watch(&u, "utimensat NOW OMIT, writable, not owner", ["other"]) { times("other", now, omit) }
                watch(&u, "utimensat OMIT OMIT, not owner", ["closed"]) { times("closed", omit, omit) }
                watch(&u, "utimensat NULL, not writable, not owner", ["closed"]) { utimensat(AT_FDCWD, "closed", nil, 0) }
                watch(&u, "utimensat explicit, owner", ["mine"]) { times("mine", at, at) }
                u.stat("mine", "mine", times: true)
                let fd = Glibc.open("other", O_WRONLY)
                watch(&u, "futimens NULL on a writable fd, not owner", ["other"]) { futimens(fd, nil) }
                var pair = [at, at]
                watch(&u, "futimens explicit on a writable fd, not owner", ["other"]) { futimens(fd, &pair) }
                close(fd)
                return u
            }, prefix: "uid 1000 (groups 1000,2000):")
            return o
        },
        ConformanceCheck("pjd: truncate and open O_TRUNC permissions") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/ro", "0123", mode: 0o644)
            Posix.writeFile("\(root)/rw", "0123", mode: 0o666)
            Posix.writeFile("\(root)/mine", "0123", mode: 0o444)
            chown("\(root)/mine", 1000, 1000)
            mkdir("\(root)/nosearch", 0o766)
            Posix.writeFile("\(root)/nosearch/f", "0123", mode: 0o666)
            mkdir("\(root)/dir", 0o777)
            o.merge(Posix.asUser(1000, 1000, in: root) {
                var u = Outcome()
                u.call("truncate a 0644 file of root", truncate("ro", 0))
                u.call("truncate a 0666 file of root", truncate("rw", 1))
                u.call("truncate own 0444 file", truncate("mine", 0))
                u.call("truncate through a dir without search", truncate("nosearch/f", 0))
                u.call("truncate a dir", truncate("dir", 0))
                u.call("open O_RDONLY|O_TRUNC a 0644 file of root", Glibc.open("ro", O_RDONLY | O_TRUNC))
                u.call("open O_WRONLY|O_TRUNC a 0644 file of root", Glibc.open("ro", O_WRONLY | O_TRUNC))
                u.call("open O_WRONLY|O_TRUNC own 0444 file", Glibc.open("mine", O_WRONLY | O_TRUNC))
                let fd = u.fd("open O_RDWR|O_TRUNC a 0666 file of root", Glibc.open("rw", O_RDWR | O_TRUNC))
                if fd >= 0 { close(fd) }
                let ro = Glibc.open("ro", O_RDONLY)
                u.call("ftruncate an O_RDONLY fd", ftruncate(ro, 0))
                close(ro)
                u.stat("ro", "ro")
                u.stat("rw", "rw")
                u.stat("mine", "mine")
                return u
            }, prefix: "uid 1000:")
            let dirFD = Glibc.open("\(root)/dir", O_RDONLY | O_DIRECTORY)
            o.call("ftruncate a dir fd", ftruncate(dirFD, 0))
            close(dirFD)
            Posix.writeFile("\(root)/big", "x")
            o.call("truncate to 16 TiB (beyond ext4's limit)", truncate("\(root)/big", 16 << 40))
            o.call("truncate to 1 TiB", truncate("\(root)/big", 1 << 40))
            o.stat("big", "\(root)/big")
            return o
        },
        ConformanceCheck("pjd: ENAMETOOLONG for components and paths") { root in
            var o = Outcome()
            let long = String(repeating: "x", count: 256), max = String(repeating: "y", count: 255)
            Posix.writeFile("\(root)/f", "f")
            mkdir("\(root)/d", 0o755)
            o.call("mkdir 256", mkdir("\(root)/\(long)", 0o755))
            o.call("mkdir 255", mkdir("\(root)/\(max)", 0o755))
            o.call("rmdir 256", rmdir("\(root)/\(long)"))
            o.call("rmdir 255", rmdir("\(root)/\(max)"))
            o.call("mkfifo 256", mkfifo("\(root)/\(long)", 0o644))
            o.call("mknod 256", mknod("\(root)/\(long)", S_IFIFO | 0o644, 0))
            o.call("symlink named 256", symlink("f", "\(root)/\(long)"))
            o.call("symlink named 255", symlink("f", "\(root)/\(max)"))
            o.call("unlink 255", unlink("\(root)/\(max)"))
            o.call("symlink to a 256 target (allowed)", symlink(long, "\(root)/tolong"))
            o.stat("tolong", "\(root)/tolong")
            o.call("open through it", Glibc.open("\(root)/tolong", O_RDONLY))
            o.call("link to 256", link("\(root)/f", "\(root)/\(long)"))
            o.call("link from 256", link("\(root)/\(long)", "\(root)/g"))
            o.call("rename to 256", rename("\(root)/f", "\(root)/\(long)"))
            o.call("rename from 256", rename("\(root)/\(long)", "\(root)/g"))
            o.call("rename to 255", rename("\(root)/f", "\(root)/\(max)"))
            o.call("rename back", rename("\(root)/\(max)", "\(root)/f"))
            o.call("unlink 256", unlink("\(root)/\(long)"))
            o.call("chmod 256", chmod("\(root)/\(long)", 0o644))
            o.call("chown 256", chown("\(root)/\(long)", 1, 1))
            o.call("truncate 256", truncate("\(root)/\(long)", 0))
            o.call("utimensat 256", utimensat(AT_FDCWD, "\(root)/\(long)", nil, 0))
            o.call("setxattr 256", Posix.setxattr("\(root)/\(long)", "user.x", [1]))
            o.stat("256", "\(root)/\(long)")
            o.stat("d/256", "\(root)/d/\(long)")
            // PATH_MAX (4096 with the NUL) counts the path as passed: build one relative to a dir fd, so both
            // sides pass paths of the same length. 15 components of 255 + "/" make 3840 bytes.
            let top = Glibc.open(root, O_RDONLY | O_DIRECTORY)
            defer { close(top) }
            var prefix = ""
            var made = 0
            for level in 0..<15 {
                let component = String(repeating: Character(String(UnicodeScalar(UInt8(0x61 + level)))), count: 255)
                if mkdirat(top, prefix + component, 0o755) == 0 { made += 1 }
                prefix += component + "/"
            }
            o.note("made \(made) nested dirs, prefix \(prefix.utf8.count) bytes")
            let fits = prefix + String(repeating: "z", count: 4095 - prefix.utf8.count)
            let over = prefix + String(repeating: "z", count: 4096 - prefix.utf8.count)
            let a = Glibc.openat(top, fits, O_CREAT | O_WRONLY, 0o644)
            o.call("create a 4095-byte path", a, value: false)
            if a >= 0 { close(a) }
            o.call("create a 4096-byte path", Glibc.openat(top, over, O_CREAT | O_WRONLY, 0o644))
            o.call("mkdir a 4096-byte path", mkdirat(top, over, 0o755))
            o.call("unlink the 4095-byte path", unlinkat(top, fits, 0))
            o.call("symlink with a 4096-byte target", symlinkat(over, top, "longtarget"))
            var st = Glibc.stat()
            o.call("stat a 4096-byte path", fstatat(top, over, &st, AT_SYMLINK_NOFOLLOW))
            return o
        },
        ConformanceCheck("pjd: error cases of mkdir, rmdir, unlink, link and rename") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/file", "f")
            mkdir("\(root)/dir", 0o755)
            mkdir("\(root)/dir/sub", 0o755)
            mkdir("\(root)/empty", 0o755)
            symlink("file", "\(root)/link")
            symlink("nowhere", "\(root)/dangling")
            mkfifo("\(root)/fifo", 0o644)
            for name in ["file", "dir", "link", "dangling", "fifo"] {
                o.call("mkdir over \(name)", mkdir("\(root)/\(name)", 0o755))
                o.call("mkfifo over \(name)", mkfifo("\(root)/\(name)", 0o644))
                o.call("symlink over \(name)", symlink("x", "\(root)/\(name)"))
                o.call("link over \(name)", link("\(root)/file", "\(root)/\(name)"))
                o.call("mknod over \(name)", mknod("\(root)/\(name)", S_IFIFO | 0o644, 0))
            }
            o.call("mkdir with a trailing slash", mkdir("\(root)/new/", 0o755))
            o.call("mkdir under a file", mkdir("\(root)/file/x", 0o755))
            o.call("mkdir under a missing dir", mkdir("\(root)/none/x", 0o755))
            o.call("rmdir a file", rmdir("\(root)/file"))
            o.call("rmdir a symlink to a dir", rmdir("\(root)/dirlink"))
            symlink("dir", "\(root)/dirlink")
            o.call("rmdir a symlink to a dir", rmdir("\(root)/dirlink"))
            o.call("rmdir a full dir", rmdir("\(root)/dir"))
            o.call("rmdir dir/sub/.", rmdir("\(root)/dir/sub/."))
            o.call("rmdir dir/sub/..", rmdir("\(root)/dir/sub/.."))
            o.call("rmdir under a file", rmdir("\(root)/file/x"))
            o.call("rmdir missing", rmdir("\(root)/none"))
            o.call("rmdir empty/ (trailing slash)", rmdir("\(root)/empty/"))
            o.call("unlink a dir", unlink("\(root)/dir"))
            o.call("unlink a file with a trailing slash", unlink("\(root)/file/"))
            o.call("unlink under a file", unlink("\(root)/file/x"))
            o.call("unlinkat AT_REMOVEDIR a file", unlinkat(AT_FDCWD, "\(root)/file", AT_REMOVEDIR))
            o.call("link a dir", link("\(root)/dir", "\(root)/dir2"))
            o.call("link into a missing dir", link("\(root)/file", "\(root)/none/x"))
            o.call("link under a file", link("\(root)/file", "\(root)/file/x"))
            o.call("link a missing file", link("\(root)/none", "\(root)/x"))
            o.call("link with a trailing slash", link("\(root)/file", "\(root)/x/"))
            o.call("rename dir into its own subdir", rename("\(root)/dir", "\(root)/dir/sub/inside"))
            o.call("rename dir onto its own subdir", rename("\(root)/dir", "\(root)/dir/sub"))
            o.call("rename dir/sub onto its parent", rename("\(root)/dir/sub", "\(root)/dir"))
            o.call("rename a dir over a file", rename("\(root)/empty", "\(root)/file"))
            o.call("rename a file over a dir", rename("\(root)/file", "\(root)/empty"))
            o.call("rename a file with a trailing slash", rename("\(root)/file/", "\(root)/file2"))
            o.call("rename to a trailing slash", rename("\(root)/file", "\(root)/file2/"))
            o.call("rename a dir to a trailing slash", rename("\(root)/empty", "\(root)/empty2/"))
            o.call("rename dir/. away", rename("\(root)/dir/.", "\(root)/x"))
            o.call("rename onto dir/..", rename("\(root)/empty2", "\(root)/dir/.."))
            o.call("rename under a file", rename("\(root)/fifo", "\(root)/file/x"))
            o.call("rename a symlink to a dir over an empty dir", rename("\(root)/dirlink", "\(root)/empty2"))
            o.call("rename a fifo", rename("\(root)/fifo", "\(root)/fifo2"))
            o.call("rename a dangling symlink", rename("\(root)/dangling", "\(root)/dangling2"))
            o.call("rename a lower dir into its own child", rename("\(root)/lowerdir", "\(root)/lowerdir/x"))
            o.call("rmdir the lower dir (not empty)", rmdir("\(root)/lowerdir"))
            o.note("left: " + listing(root).sorted().joined(separator: " "))
            return o
        },
        ConformanceCheck("pjd: mknod and mkfifo modes under umask") { root in
            var o = Outcome()
            let types: [(String, UInt32, dev_t)] = [("fifo", S_IFIFO, 0), ("chr", S_IFCHR, 0x105), ("blk", S_IFBLK, 0x701),
                                                    ("sock", S_IFSOCK, 0), ("reg", S_IFREG, 0), ("type 0", 0, 0)]
            for mask: mode_t in [0o022, 0o077, 0] {
                let saved = umask(mask)
                for (label, type, rdev) in types {
                    for mode: mode_t in [0o777, 0o7777, 0o640] {
                        let name = "\(root)/n-\(label.replacingOccurrences(of: " ", with: ""))-\(String(mask, radix: 8))-\(String(mode, radix: 8))"
                        o.call("umask \(String(mask, radix: 8)) mknod \(label) \(String(mode, radix: 8))", mknod(name, type | mode, rdev))
                        o.stat("it", name)
                    }
                }
                let fifo = "\(root)/p-\(String(mask, radix: 8))"
                o.call("umask \(String(mask, radix: 8)) mkfifo 0777", mkfifo(fifo, 0o777))
                o.stat("it", fifo)
                let dir = "\(root)/d-\(String(mask, radix: 8))"
                o.call("umask \(String(mask, radix: 8)) mkdir 07777", mkdir(dir, 0o7777))
                o.stat("it", dir)
                let sym = "\(root)/l-\(String(mask, radix: 8))"
                o.call("umask \(String(mask, radix: 8)) symlink", symlink("t", sym))
                o.stat("it", sym)
                umask(saved)
            }
            o.call("mknod S_IFDIR", mknod("\(root)/ndir", S_IFDIR | 0o755, 0))
            o.call("mknod an invalid type", mknod("\(root)/bad", 0o170000 | 0o644, 0))
            o.call("mknod chr 0:0 (whiteout)", mknod("\(root)/wh", S_IFCHR, 0))
            o.stat("wh", "\(root)/wh")
            o.merge(Posix.asUser(1000, 1000, in: "\(root)") {
                var u = Outcome()
                u.call("mknod fifo in a root dir", mknod("x", S_IFIFO | 0o644, 0))
                return u
            }, prefix: "uid 1000:")
            return o
        },
        ConformanceCheck("pjd: sticky directories and non-owners") { root in
            var o = Outcome()
            mkdir("\(root)/s", 0o1777)
            chmod("\(root)/s", 0o1777)
            chown("\(root)/s", 1000, 1000)
            for (name, owner) in [("f1001", uid_t(1001)), ("f1002", 1002), ("froot", 0)] {
                Posix.writeFile("\(root)/s/\(name)", "x", mode: 0o666)
                chown("\(root)/s/\(name)", owner, owner)
            }
            for (name, owner) in [("d1001", uid_t(1001)), ("d1002", 1002)] {
                mkdir("\(root)/s/\(name)", 0o777)
                chown("\(root)/s/\(name)", owner, owner)
            }
            symlink("x", "\(root)/s/l1001")
            lchown("\(root)/s/l1001", 1001, 1001)
            mkfifo("\(root)/s/p1002", 0o666)
            chown("\(root)/s/p1002", 1002, 1002)
            mkdir("\(root)/t", 0o1777)
            chmod("\(root)/t", 0o1777)
            o.merge(Posix.asUser(1002, 1002, in: root) {
                var u = Outcome()
                u.call("unlink 1001's symlink", unlink("s/l1001"))
                u.call("rename 1001's dir out", rename("s/d1001", "t/d"))
                u.call("rename own dir into t", rename("s/d1002", "t/d1002"))
                u.call("rename own fifo over 1001's file", rename("s/p1002", "s/f1001"))
                u.call("rename own fifo into t", rename("s/p1002", "t/p"))
                u.call("rename own file over own fifo", rename("s/f1002", "t/p"))
                u.call("symlink over 1001's file", symlink("y", "s/f1001"))
                u.call("rename 1001's file onto itself", rename("s/f1001", "s/f1001"))
                return u
            }, prefix: "uid 1002:")
            o.merge(Posix.asUser(1000, 1000, in: root) {
                var u = Outcome()
                u.call("dir owner unlinks 1001's file", unlink("s/f1001"))
                u.call("dir owner unlinks root's file", unlink("s/froot"))
                u.call("dir owner unlinks 1001's symlink", unlink("s/l1001"))
                u.call("dir owner renames 1001's dir", rename("s/d1001", "s/d"))
                u.call("dir owner removes it", rmdir("s/d"))
                u.call("non-owner of t unlinks there", unlink("t/p"))
                return u
            }, prefix: "uid 1000:")
            o.note("left s: " + listing("\(root)/s").sorted().joined(separator: " "))
            o.note("left t: " + listing("\(root)/t").sorted().joined(separator: " "))
            return o
        },
        ConformanceCheck("pjd: fifo opens") { root in
            var o = Outcome()
            mkfifo("\(root)/p", 0o666)
            o.call("O_WRONLY|O_NONBLOCK without a reader", Glibc.open("\(root)/p", O_WRONLY | O_NONBLOCK))
            let reader = o.fd("O_RDONLY|O_NONBLOCK", Glibc.open("\(root)/p", O_RDONLY | O_NONBLOCK))
            let writer = o.fd("O_WRONLY|O_NONBLOCK with a reader", Glibc.open("\(root)/p", O_WRONLY | O_NONBLOCK))
            o.call("write", Posix.write(writer, "fifo"))
            var buffer = [UInt8](repeating: 0, count: 8)
            o.call("read", read(reader, &buffer, 8))
            o.call("read empty", read(reader, &buffer, 8))
            close(writer)
            close(reader)
            let rw = o.fd("open O_RDWR|O_TRUNC", Glibc.open("\(root)/p", O_RDWR | O_TRUNC | O_NONBLOCK))
            if rw >= 0 { close(rw) }
            o.stat("p", "\(root)/p")
            o.merge(Posix.asUser(1000, 1000, in: root) {
                var u = Outcome()
                u.call("non-root O_WRONLY|O_NONBLOCK without a reader", Glibc.open("p", O_WRONLY | O_NONBLOCK))
                let r = u.fd("non-root O_RDONLY|O_NONBLOCK", Glibc.open("p", O_RDONLY | O_NONBLOCK))
                if r >= 0 { close(r) }
                return u
            }, prefix: "uid 1000:")
            return o
        },
        ConformanceCheck("pjd: supplementary groups of the caller") { root in
            var o = Outcome()
            mkdir("\(root)/g", 0o770)
            chown("\(root)/g", 0, 2000)
            chmod("\(root)/g", 0o770)
            mkdir("\(root)/sg", 0o2770)
            chown("\(root)/sg", 0, 2000)
            chmod("\(root)/sg", 0o2770)
            mkdir("\(root)/pub", 0o2777)
            chown("\(root)/pub", 0, 2000)
            chmod("\(root)/pub", 0o2777)
            Posix.writeFile("\(root)/gf", "group-writable", mode: 0o660)
            chown("\(root)/gf", 0, 2000)
            chmod("\(root)/gf", 0o660)
            o.merge(Posix.asUser(1000, 1000, groups: [1000, 2000], in: root) {
                var u = Outcome()
                let fd = u.fd("create in a dir writable by a supplementary group", Glibc.open("g/f", O_CREAT | O_WRONLY, 0o644))
                if fd >= 0 { close(fd) }
                u.stat("g/f", "g/f")
                u.call("mkdir there", mkdir("g/d", 0o755))
                u.call("mkfifo there", mkfifo("g/p", 0o644))
                u.call("symlink there", symlink("f", "g/l"))
                u.call("link there", link("g/f", "g/f2"))
                u.call("rename there", rename("g/f2", "g/f3"))
                u.call("unlink there", unlink("g/f3"))
                u.call("write a file of that group", Posix.writeFile("gf", "w"))
                u.note("listing g: " + listing("g").sorted().joined(separator: " "))
                let sf = u.fd("create 02755 in a setgid dir of that group", Glibc.open("sg/f", O_CREAT | O_WRONLY, 0o2755))
                if sf >= 0 { close(sf) }
                u.stat("sg/f", "sg/f")
                u.call("mkdir in the setgid dir", mkdir("sg/d", 0o2755))
                u.stat("sg/d", "sg/d")
                u.call("chmod sg/f 02755", chmod("sg/f", 0o2755))
                u.stat("sg/f", "sg/f")
                return u
            }, prefix: "uid 1000 (groups 1000,2000):")
            o.merge(Posix.asUser(1000, 1000, groups: [1000], in: root) {
                var u = Outcome()
                u.call("create without the group", Glibc.open("g/h", O_CREAT | O_WRONLY, 0o644))
                let sf = u.fd("create 02755 in pub setgid dir of another group", Glibc.open("pub/f", O_CREAT | O_WRONLY, 0o2755))
                if sf >= 0 { close(sf) }
                u.stat("pub/f", "pub/f")
                return u
            }, prefix: "uid 1000 (group 1000 only):")
            return o
        },
        ConformanceCheck("pjd: times of new files, open errors, atime on read, fallocate on odd files") { root in
            var o = Outcome()
            let r = root + "/."
            watch(&o, "open O_CREAT of a new file", [r]) { () -> Int32 in
                let fd = Glibc.open("\(root)/new", O_CREAT | O_WRONLY, 0o644)
                if fd >= 0 { close(fd) }
                return fd < 0 ? -1 : 0
            }
            if let new = stamps("\(root)/new"), let parent = stamps(r) {
                o.note("new file's mtime is the parent's: \(same(new.mtime, parent.mtime)), ctime: \(same(new.ctime, parent.ctime))")
            }
            watch(&o, "open O_CREAT of an existing file", [r, "\(root)/new"]) { () -> Int32 in
                let fd = Glibc.open("\(root)/new", O_CREAT | O_WRONLY, 0o644)
                if fd >= 0 { close(fd) }
                return fd < 0 ? -1 : 0
            }
            watch(&o, "open O_CREAT|O_EXCL of an existing file", [r, "\(root)/new"]) {
                Glibc.open("\(root)/new", O_CREAT | O_EXCL | O_WRONLY, 0o644)
            }
            mkdir("\(root)/dir", 0o755)
            o.call("open O_CREAT of a dir", Glibc.open("\(root)/dir", O_CREAT | O_RDONLY, 0o644))
            o.call("open O_WRONLY of a dir", Glibc.open("\(root)/dir", O_WRONLY))
            o.call("open under a file", Glibc.open("\(root)/new/x", O_RDONLY))
            o.call("open O_CREAT under a file", Glibc.open("\(root)/new/x", O_CREAT | O_RDONLY, 0o644))
            o.call("open a trailing slash on a file", Glibc.open("\(root)/new/", O_RDONLY))
            o.call("open O_CREAT with a trailing slash", Glibc.open("\(root)/other/", O_CREAT | O_RDONLY, 0o644))
            mkdir("\(root)/closed", 0o700)
            Posix.writeFile("\(root)/closed/f", "f", mode: 0o666)
            Posix.writeFile("\(root)/unreadable", "u", mode: 0o200)
            o.merge(Posix.asUser(1000, 1000, in: root) {
                var u = Outcome()
                u.call("open through a dir without search", Glibc.open("closed/f", O_RDONLY))
                u.call("open a write-only file for reading", Glibc.open("unreadable", O_RDONLY))
                u.call("open O_CREAT in a root dir", Glibc.open("dir/mine", O_CREAT | O_WRONLY, 0o644))
                u.call("open O_CREAT of an existing file in a root dir", Glibc.open("unreadable", O_CREAT | O_RDONLY, 0o644))
                return u
            }, prefix: "uid 1000:")
            // relatime: a read updates atime when it is older than mtime.
            Posix.writeFile("\(root)/a", "some bytes")
            _ = times("\(root)/a", timespec(tv_sec: 1000, tv_nsec: 0), timespec(tv_sec: 2000, tv_nsec: 0))
            let reader = Glibc.open("\(root)/a", O_RDONLY)
            o.note("read: " + Posix.pread(reader, 64, 0))
            close(reader)
            var st = Glibc.stat()
            lstat("\(root)/a", &st)
            o.note("atime after a read (was older than mtime): \(st.st_atim.tv_sec == 1000 ? "kept" : "updated")")
            o.note("mtime after a read: \(st.st_mtim.tv_sec)")
            mkfifo("\(root)/p", 0o666)
            let fifo = Glibc.open("\(root)/p", O_RDWR | O_NONBLOCK)
            o.call("fallocate on a fifo", Posix.fallocate(fifo, 0, 0, 4096))
            o.call("ftruncate on a fifo", ftruncate(fifo, 0))
            o.call("lseek on a fifo", lseek(fifo, 0, SEEK_SET))
            close(fifo)
            let dirFD = Glibc.open("\(root)/dir", O_RDONLY | O_DIRECTORY)
            o.call("fallocate on a dir", Posix.fallocate(dirFD, 0, 0, 4096))
            close(dirFD)
            return o
        },
    ]
}
