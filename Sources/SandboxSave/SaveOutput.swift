import Glibc
import LinuxBlock
import Sandbox

/// save's output file: its creation, flushes and the errors a full destination turns into.
enum SaveOutput {
    /// O_EXCL: a .partial left by an interrupted save is replaced only with --force. Created with `mode` (0666
    /// less the caller's umask) as the daemon's umask is 0: the image holds password hashes and keys.
    static func openPartial(_ partial: String, force: Bool, mode: mode_t) throws(SandboxError) -> FileDescriptor {
        let flags = O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC
        var fd = open(partial, flags, mode)
        if fd < 0, errno == EEXIST, force, unlink(partial) == 0 { fd = open(partial, flags, mode) }
        guard fd >= 0 else {
            let saved = errno
            let hint = saved == EEXIST ? " (left by an interrupted save? --force replaces it)" : ""
            throw .stepFailed(step: "save", underlying: SystemError("create", partial + hint, errno: saved))
        }
        return FileDescriptor(adopting: fd)
    }

    /// The loop device turns a full destination into EIO: say what it is when the destination is full.
    static func destinationFull(_ output: String) -> SystemError? {
        let parent = String(output[..<(output.lastIndex(of: "/") ?? output.startIndex)])
        var fs = statvfs()
        guard statvfs(parent.isEmpty ? "/" : parent, &fs) == 0, UInt64(fs.f_bavail) * UInt64(fs.f_frsize) < 1 << 20 else { return nil }
        return SystemError("write", "\(parent) (the destination is full)", errno: ENOSPC)
    }

    static func syncDirectory(of path: String) {
        let parent = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        let fd = open(parent.isEmpty ? "/" : parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }
}

extension SaveJob {
    /// `duration` in seconds, as save's result and progress show it.
    public static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// Wraps any error thrown by `body` with the name of the step, so one log line can say what failed.
func step<T>(_ name: String, _ body: () throws -> T) throws(SandboxError) -> T { try SandboxError.wrapping(name, body) }

extension SaveError: ErrnoCarrying {}
