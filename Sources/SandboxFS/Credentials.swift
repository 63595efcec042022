import CFuse
import CLinux
import Foundation
import Glibc

/// The caller of a request, from fuse_req_ctx.
struct Caller {
    let uid: uid_t
    let gid: gid_t
    let pid: pid_t
    /// The caller's umask on create/mkdir/mknod (FUSE_CAP_DONT_MASK: the kernel leaves it to us).
    let umask: mode_t

    init(_ req: fuse_req_t) {
        if let ctx = fuse_req_ctx(req) {
            uid = ctx.pointee.uid
            gid = ctx.pointee.gid
            pid = ctx.pointee.pid
            umask = ctx.pointee.umask
        } else {
            uid = 0
            gid = 0
            pid = 0
            umask = 0
        }
    }

    /// Whether the caller holds CAP_SYS_ADMIN (which trusted.* xattrs need), from /proc/PID/status;
    /// uid 0 when the process cannot be read (gone, or in another pid namespace).
    var hasSysAdmin: Bool {
        let capSysAdmin: UInt64 = 1 << 21
        guard pid > 0, let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let bits = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return uid == 0 }
        return bits & capSysAdmin != 0
    }

    /// Runs `body` with this thread's filesystem identity switched to the caller, so what it creates
    /// belongs to the caller. setfsuid/setfsgid are per-thread. Take any fd that needs the daemon's
    /// privileges (open_by_handle_at needs CAP_DAC_READ_SEARCH) before calling this.
    @discardableResult
    func asFilesystemIdentity<R>(_ body: () throws -> R) rethrows -> R {
        let daemonUID = geteuid()
        let daemonGID = getegid()
        guard uid != daemonUID || gid != daemonGID else { return try body() }
        _ = clinux_setfsgid(gid)
        _ = clinux_setfsuid(uid)
        defer {
            _ = clinux_setfsuid(daemonUID)
            _ = clinux_setfsgid(daemonGID)
        }
        return try body()
    }
}
