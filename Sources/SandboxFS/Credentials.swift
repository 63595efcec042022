import CFuse
import CLinux
import Glibc

/// The caller of a request, from fuse_req_ctx.
struct Caller {
    let uid: uid_t
    let gid: gid_t

    init(_ req: fuse_req_t) {
        if let ctx = fuse_req_ctx(req) {
            uid = ctx.pointee.uid
            gid = ctx.pointee.gid
        } else {
            uid = 0
            gid = 0
        }
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
