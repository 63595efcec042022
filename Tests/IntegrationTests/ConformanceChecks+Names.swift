import Foundation
import Glibc

/// rename (plain and renameat2 flags), hard links, symlinks, fifos and device nodes.
extension ConformanceChecks {
    static func rename2(_ root: String, _ from: String, _ to: String, _ flags: UInt32) -> Int32 {
        Posix.renameat2(AT_FDCWD, "\(root)/\(from)", AT_FDCWD, "\(root)/\(to)", flags)
    }

    static let names: [ConformanceCheck] = [
        ConformanceCheck("rename over files") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/a", "A")
            Posix.writeFile("\(root)/b", "B")
            o.call("link a a2", link("\(root)/a", "\(root)/a2"))
            o.call("rename a over b", rename("\(root)/a", "\(root)/b"))
            o.stat("a", "\(root)/a")
            o.stat("b", "\(root)/b")
            o.content("b", "\(root)/b")
            o.call("rename b onto itself", rename("\(root)/b", "\(root)/b"))
            o.call("rename a2 onto its hard link b", rename("\(root)/a2", "\(root)/b"))
            o.stat("a2", "\(root)/a2")
            o.call("rename a lower file over a new one", rename("\(root)/lower.bin", "\(root)/b"))
            o.stat("lower.bin", "\(root)/lower.bin")
            o.content("b", "\(root)/b")
            Posix.writeFile("\(root)/c", "C")
            o.call("rename a new file over where the lower file was", rename("\(root)/c", "\(root)/lower.bin"))
            o.content("lower.bin", "\(root)/lower.bin")
            o.call("rename missing", rename("\(root)/nothing", "\(root)/x"))
            return o
        },
        ConformanceCheck("rename over directories") { root in
            var o = Outcome()
            mkdir("\(root)/d1", 0o755)
            Posix.writeFile("\(root)/d1/f", "f")
            mkdir("\(root)/empty", 0o755)
            mkdir("\(root)/full", 0o755)
            Posix.writeFile("\(root)/full/x", "x")
            Posix.writeFile("\(root)/file", "file")
            o.call("dir over an empty dir", rename("\(root)/d1", "\(root)/empty"))
            o.stat("empty/f", "\(root)/empty/f")
            o.stat("d1", "\(root)/d1")
            o.call("dir over a full dir", rename("\(root)/empty", "\(root)/full"))
            o.call("file over a dir", rename("\(root)/file", "\(root)/full"))
            o.call("dir over a file", rename("\(root)/full", "\(root)/file"))
            o.call("dir into itself", rename("\(root)/full", "\(root)/full/sub"))
            mkdir("\(root)/e2", 0o755)
            o.call("lower dir over an empty dir", rename("\(root)/lowerdir", "\(root)/e2"))
            o.call("rmdir a full dir", rmdir("\(root)/full"))
            o.call("rmdir a file", rmdir("\(root)/file"))
            o.call("unlink a dir", unlink("\(root)/full"))
            o.stat("root", root)
            return o
        },
        ConformanceCheck("rename across directories") { root in
            var o = Outcome()
            mkdir("\(root)/x", 0o755)
            mkdir("\(root)/y", 0o755)
            Posix.writeFile("\(root)/x/f", "f")
            o.call("file x/f -> y/g", rename("\(root)/x/f", "\(root)/y/g"))
            o.content("y/g", "\(root)/y/g")
            o.stat("x/f", "\(root)/x/f")
            mkdir("\(root)/x/sub", 0o755)
            o.stat("x before", "\(root)/x")
            o.call("dir x/sub -> y/sub", rename("\(root)/x/sub", "\(root)/y/sub"))
            o.stat("x after", "\(root)/x")
            o.stat("y after", "\(root)/y")
            o.call("lower file -> y/lower", rename("\(root)/lower.bin", "\(root)/y/lower"))
            o.content("y/lower", "\(root)/y/lower")
            o.call("lower inner -> y/inner", rename("\(root)/lowerdir/inner", "\(root)/y/inner"))
            o.content("y/inner", "\(root)/y/inner")
            o.call("readdir lowerdir", Int32(((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/lowerdir")) ?? ["?"]).count))
            return o
        },
        ConformanceCheck("rename RENAME_NOREPLACE") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/a", "A")
            Posix.writeFile("\(root)/b", "B")
            mkdir("\(root)/d", 0o755)
            o.call("onto an existing file", rename2(root, "a", "b", Posix.RENAME_NOREPLACE))
            o.call("onto a lower file", rename2(root, "a", "lower.bin", Posix.RENAME_NOREPLACE))
            o.call("onto a directory", rename2(root, "a", "d", Posix.RENAME_NOREPLACE))
            o.call("onto a new name", rename2(root, "a", "c", Posix.RENAME_NOREPLACE))
            o.content("c", "\(root)/c")
            o.content("b", "\(root)/b")
            o.call("dir onto a new name", rename2(root, "d", "d2", Posix.RENAME_NOREPLACE))
            o.stat("d2", "\(root)/d2")
            return o
        },
        ConformanceCheck("rename RENAME_EXCHANGE") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/a", "A")
            mkdir("\(root)/d", 0o700)
            Posix.writeFile("\(root)/d/in", "in")
            o.call("file <-> dir", rename2(root, "a", "d", Posix.RENAME_EXCHANGE))
            o.stat("a", "\(root)/a")
            o.stat("d", "\(root)/d")
            o.content("a/in", "\(root)/a/in")
            o.call("with a missing name", rename2(root, "a", "missing", Posix.RENAME_EXCHANGE))
            o.call("both flags", rename2(root, "a", "d", Posix.RENAME_EXCHANGE | Posix.RENAME_NOREPLACE))
            Posix.writeFile("\(root)/new", "new")
            o.call("new <-> lower file", rename2(root, "new", "lower.bin", Posix.RENAME_EXCHANGE))
            o.content("new", "\(root)/new")
            o.content("lower.bin", "\(root)/lower.bin")
            mkdir("\(root)/x", 0o755)
            Posix.writeFile("\(root)/x/f", "xf")
            o.call("across dirs", rename2(root, "x/f", "d", Posix.RENAME_EXCHANGE))
            o.stat("x/f", "\(root)/x/f")
            o.content("d", "\(root)/d")
            return o
        },
        ConformanceCheck("hard links and nlink") { root in
            var o = Outcome()
            Posix.writeFile("\(root)/f", "f")
            o.call("link f g", link("\(root)/f", "\(root)/g"))
            o.call("link f h", link("\(root)/f", "\(root)/h"))
            o.stat("f", "\(root)/f")
            let fd = Glibc.open("\(root)/h", O_RDONLY)
            o.call("unlink g", unlink("\(root)/g"))
            o.fstat("h", fd)
            o.call("link onto an existing name", link("\(root)/f", "\(root)/h"))
            o.call("link a directory", link("\(root)/lowerdir", "\(root)/dl"))
            o.call("link a missing file", link("\(root)/none", "\(root)/z"))
            o.call("link a lower file", link("\(root)/lower.bin", "\(root)/lower2"))
            o.stat("lower.bin", "\(root)/lower.bin")
            o.content("lower2", "\(root)/lower2")
            symlink("f", "\(root)/sl")
            o.call("link a symlink (not followed)", linkat(AT_FDCWD, "\(root)/sl", AT_FDCWD, "\(root)/sl2", 0))
            o.stat("sl2", "\(root)/sl2")
            o.call("link through a symlink (followed)", linkat(AT_FDCWD, "\(root)/sl", AT_FDCWD, "\(root)/f3", AT_SYMLINK_FOLLOW))
            o.stat("f3", "\(root)/f3")
            o.call("unlink f", unlink("\(root)/f"))
            o.call("unlink h", unlink("\(root)/h"))
            o.call("unlink f3", unlink("\(root)/f3"))
            o.fstat("open after last unlink", fd)
            close(fd)
            mkdir("\(root)/dir", 0o755)
            mkdir("\(root)/dir/a", 0o755)
            mkdir("\(root)/dir/b", 0o755)
            o.stat("dir with two subdirs", "\(root)/dir")
            return o
        },
        ConformanceCheck("symlinks") { root in
            var o = Outcome()
            o.call("dangling", symlink("nowhere", "\(root)/dangling"))
            o.stat("dangling", "\(root)/dangling")
            o.stat("dangling followed", "\(root)/dangling", follow: true)
            o.call("absolute", symlink("/proc/self/nonexistent-imgsandbox", "\(root)/absolute"))
            o.call("odd characters", symlink("../a b/\tc\\d", "\(root)/odd"))
            for (label, count) in [("4095", 4095), ("4096", 4096), ("1 KiB", 1024)] {
                o.call("target of \(label) bytes", symlink(String(repeating: "t", count: count), "\(root)/long\(count)"))
                o.stat("long\(count)", "\(root)/long\(count)")
            }
            for name in ["dangling", "absolute", "odd", "long4095", "long1024"] {
                var buffer = [CChar](repeating: 0, count: 8192)
                let count = readlink("\(root)/\(name)", &buffer, buffer.count)
                o.note("readlink \(name): " + (count < 0 ? ErrnoName.of(errno)
                    : Outcome.render(buffer.prefix(count).map { UInt8(bitPattern: $0) })))
            }
            var small = [CChar](repeating: 0, count: 4)
            o.call("readlink into 4 bytes", readlink("\(root)/dangling", &small, 4))
            o.call("readlink a file", readlink("\(root)/lower.bin", &small, 4))
            o.call("symlink over an existing name", symlink("x", "\(root)/dangling"))
            symlink("lowerdir", "\(root)/todir")
            o.stat("through a dir symlink", "\(root)/todir/inner", follow: true)
            o.call("symlink loop a->b", symlink("loopb", "\(root)/loopa"))
            o.call("symlink loop b->a", symlink("loopa", "\(root)/loopb"))
            o.call("open a loop", Glibc.open("\(root)/loopa", O_RDONLY))
            o.call("lchown a symlink", lchown("\(root)/dangling", 1000, 1001))
            o.stat("dangling after lchown", "\(root)/dangling")
            o.call("unlink dangling", unlink("\(root)/dangling"))
            return o
        },
        ConformanceCheck("fifos and device nodes") { root in
            var o = Outcome()
            o.call("mkfifo", mkfifo("\(root)/p", 0o640))
            o.stat("p", "\(root)/p")
            let fd = o.fd("open fifo rdwr", Glibc.open("\(root)/p", O_RDWR | O_NONBLOCK))
            if fd >= 0 {
                o.call("write fifo", Posix.write(fd, "through"))
                var buffer = [UInt8](repeating: 0, count: 16)
                let count = read(fd, &buffer, 16)
                o.note("read fifo: " + (count < 0 ? ErrnoName.of(errno) : Outcome.render(Array(buffer.prefix(count)))))
                o.call("fsync fifo", fsync(fd))
                close(fd)
            }
            o.call("mknod chr 1:3", mknod("\(root)/null", S_IFCHR | 0o600, 0x103))
            o.stat("null", "\(root)/null")
            o.call("mknod blk 7:200 (large minor)", mknod("\(root)/blk", S_IFBLK | 0o660, (7 << 8) | 200 | (1 << 20)))
            o.stat("blk", "\(root)/blk")
            o.call("mknod sock", mknod("\(root)/sock", S_IFSOCK | 0o755, 0))
            o.stat("sock", "\(root)/sock")
            o.call("mknod reg", mknod("\(root)/reg", S_IFREG | 0o600, 0))
            o.stat("reg", "\(root)/reg")
            o.call("mknod existing", mknod("\(root)/p", S_IFIFO | 0o600, 0))
            o.call("rename fifo", rename("\(root)/p", "\(root)/p2"))
            o.stat("p2", "\(root)/p2")
            o.call("chmod chr", chmod("\(root)/null", 0o666))
            o.stat("null", "\(root)/null")
            return o
        },
    ]
}
