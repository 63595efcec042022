import CFuse
import Glibc
import Logging

/// The one reply a request gets. Ops compute a Reply with no lock held; `respond` sends it.
enum Reply {
    case ok
    case none
    case entry(id: UInt64, attr: stat, attrTimeout: Double, entryTimeout: Double)
    /// A cached "does not exist" answer (node 0).
    case negativeEntry(timeout: Double)
    case attr(stat, timeout: Double)
    case bytes([UInt8])
    case readlink([UInt8])
    case xattrSize(Int)
    case written(Int)
    /// backingID > 0: a passthrough open (FOPEN_PASSTHROUGH) on that backing id.
    case opened(fh: UInt64, keepCache: Bool, cacheReaddir: Bool, backingID: Int32 = 0)
    case created(id: UInt64, attr: stat, timeout: Double, fh: UInt64, backingID: Int32 = 0)
    case statfs(statvfs)
    case lseek(Int64)
    /// Another thread answers the request (SlowRequests).
    case answeredElsewhere
}

extension SandboxFileSystem {
    /// Runs an op and replies exactly once: its Reply, or the errno of what it threw.
    func respond(_ req: fuse_req_t, _ op: StaticString, fi: UnsafeMutablePointer<fuse_file_info>? = nil,
                 _ body: () throws -> Reply) {
        let reply: Reply
        do {
            reply = try RequestUID.with(Caller(req).uid, body)
        } catch {
            let code = errnoCode(of: error)
            logFailure(op, error, code)
            fuse_reply_err(req, code)
            return
        }
        send(req, reply, fi: fi)
    }

    func logFailure(_ op: StaticString, _ error: any Error, _ code: Int32) {
        switch code {
        case ENOENT, ENODATA, EEXIST, ENOTEMPTY, ENOSYS, ERANGE, EAGAIN:
            logger.trace("\(op) failed: \(error)")
        default:
            logger.debug("\(op) failed: \(error)")
        }
    }

    private func send(_ req: fuse_req_t, _ reply: Reply, fi: UnsafeMutablePointer<fuse_file_info>?) {
        switch reply {
        case .ok:
            fuse_reply_err(req, 0)
        case .none:
            fuse_reply_none(req)
        case let .entry(id, attr, attrTimeout, entryTimeout):
            var e = fuse_entry_param()
            e.ino = id
            e.attr = attr
            e.attr_timeout = attrTimeout
            e.entry_timeout = entryTimeout
            fuse_reply_entry(req, &e)
        case let .negativeEntry(timeout):
            var e = fuse_entry_param()
            e.entry_timeout = timeout
            fuse_reply_entry(req, &e)
        case let .attr(st, timeout):
            var attr = st
            fuse_reply_attr(req, &attr, timeout)
        case let .bytes(bytes):
            _ = bytes.withUnsafeBytes { fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
        case let .readlink(bytes):
            RawName(bytes: bytes).withCString { fuse_reply_readlink(req, $0) }
        case let .xattrSize(size):
            fuse_reply_xattr(req, size)
        case let .written(count):
            fuse_reply_write(req, count)
        case let .opened(fh, keepCache, cacheReaddir, backingID):
            guard let fi else {
                fuse_reply_err(req, EIO)
                return
            }
            fi.pointee.fh = fh
            cfuse_fi_set_open_flags(fi, keepCache ? 1 : 0, 0, cacheReaddir ? 1 : 0)
            cfuse_fi_set_backing_id(fi, backingID)
            if fuse_reply_open(req, fi) != 0 {
                // The kernel never got the handle (-ENOENT: the opener was interrupted), so it will never
                // send RELEASE for it: release it here, or rmdir waits for it in vain.
                release(fh: fh)
            }
        case let .created(id, attr, timeout, fh, backingID):
            guard let fi else {
                fuse_reply_err(req, EIO)
                return
            }
            var e = fuse_entry_param()
            e.ino = id
            e.attr = attr
            e.attr_timeout = timeout
            e.entry_timeout = timeout
            fi.pointee.fh = fh
            cfuse_fi_set_open_flags(fi, backingID == 0 ? 1 : 0, 0, 0)
            cfuse_fi_set_backing_id(fi, backingID)
            if fuse_reply_create(req, &e, fi) != 0 { // as for open: no RELEASE, no FORGET will come
                release(fh: fh)
                forget(id, 1)
            }
        case var .statfs(st):
            fuse_reply_statfs(req, &st)
        case let .lseek(offset):
            fuse_reply_lseek(req, off_t(offset))
        case .answeredElsewhere:
            break
        }
    }
}
