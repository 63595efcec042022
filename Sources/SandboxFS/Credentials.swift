import CFuse
import CLinux
import Glibc
import LinuxBlock

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

    /// Whether the caller holds CAP_SYS_ADMIN (which trusted.* xattrs need); uid 0 when its process
    /// cannot be read (gone, or in another pid namespace).
    var hasSysAdmin: Bool {
        guard let status = status() else { return uid == 0 }
        return status.has(capability: clinux_CAP_SYS_ADMIN)
    }

    /// The caller's supplementary groups and effective capabilities (nil when its process cannot be read:
    /// gone, or in another pid namespace).
    func status() -> ProcessStatus? {
        pid > 0 ? ProcessStatus.of(pid: pid) : nil
    }

    /// The set-id bits the kernel clears when this caller writes, truncates or changes the owner of a
    /// non-directory of `mode` and group `gid` (setattr_should_drop_suidgid): setuid, and setgid when
    /// group-executable or when the caller is not in the file's group; none for a caller with CAP_FSETID.
    /// The kernel's FUSE client clears only setuid and group-executable setgid itself (fuse_setattr), and
    /// none on open(O_TRUNC) with atomic_o_trunc (fuse_do_setattr sends nothing for ATTR_OPEN).
    func setIDBitsToDrop(mode: mode_t, gid: gid_t) -> mode_t {
        guard mode & (S_ISUID | S_ISGID) != 0 else { return 0 }
        let status = status()
        if let status { guard !status.has(capability: clinux_CAP_FSETID) else { return 0 } } else if uid == 0 { return 0 }
        var drop = mode & S_ISUID
        if mode & S_ISGID != 0 {
            let inGroup = gid == self.gid || status?.groups.contains(gid) == true
            if mode & S_IXGRP != 0 || !inGroup { drop |= S_ISGID }
        }
        return drop
    }

    /// Runs `body` with this thread's filesystem identity switched to the caller (fsuid, fsgid and
    /// supplementary groups), so what it creates belongs to the caller and takes a setgid directory's group
    /// as it would for the caller. The kernel has already checked the caller's permissions
    /// (default_permissions, with all its groups): the thread keeps CAP_DAC_OVERRIDE/READ_SEARCH, which
    /// setfsuid drops, so a group the daemon could not read does not refuse what the kernel allowed.
    /// All of these are per-thread. Take any fd that needs the daemon's privileges (open_by_handle_at
    /// needs CAP_DAC_READ_SEARCH) before calling this.
    @discardableResult
    func asFilesystemIdentity<R>(_ body: () throws -> R) rethrows -> R {
        let daemonUID = geteuid()
        let daemonGID = getegid()
        guard uid != daemonUID || gid != daemonGID else { return try body() }
        let groups = status()?.groups ?? []
        let daemonGroups = Self.daemonGroups
        _ = clinux_setfsgid(gid)
        _ = clinux_setfsuid(uid)
        _ = groups.withUnsafeBufferPointer { clinux_setgroups_thread($0.count, $0.baseAddress) }
        _ = clinux_raise_effective_caps(UInt64(1) << clinux_CAP_DAC_OVERRIDE | UInt64(1) << clinux_CAP_DAC_READ_SEARCH)
        defer {
            _ = daemonGroups.withUnsafeBufferPointer { clinux_setgroups_thread($0.count, $0.baseAddress) }
            // Back to fsuid 0 raises the filesystem capabilities from the permitted set again.
            _ = clinux_setfsuid(daemonUID)
            _ = clinux_setfsgid(daemonGID)
        }
        return try body()
    }

    /// The daemon's own supplementary groups, restored after acting as a caller.
    private static let daemonGroups: [gid_t] = {
        let count = getgroups(0, nil)
        guard count > 0 else { return [] }
        var groups = [gid_t](repeating: 0, count: Int(count))
        let got = getgroups(count, &groups)
        return got < 0 ? [] : Array(groups.prefix(Int(got)))
    }()
}

/// The uid of the request this worker thread is serving (set by `respond`), for the few decisions deep in an
/// operation that depend on who asks (only root attaches pristine/ again) without threading `req` through.
enum RequestUID {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// Runs `body` with `uid` as the thread's request uid.
    static func with<R>(_ uid: uid_t, _ body: () throws -> R) rethrows -> R {
        let previous = pthread_getspecific(key)
        // Stored as uid + 1, so that "not set" (nil) stays apart from uid 0.
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: UInt(uid) + 1))
        defer { pthread_setspecific(key, previous) }
        return try body()
    }

    /// True outside any request (the daemon's own work) and for root's requests.
    static var isRoot: Bool {
        guard let value = pthread_getspecific(key) else { return true }
        return UInt(bitPattern: value) == 1
    }
}
