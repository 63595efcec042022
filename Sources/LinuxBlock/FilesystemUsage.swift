import Glibc

/// Space of a mounted filesystem (statvfs).
public enum FilesystemUsage {
    /// blockSize is the fundamental block size (f_frsize); available is what unprivileged users may still use.
    public static func of(_ path: String) throws(SystemError)
        -> (blockSize: UInt64, totalBytes: UInt64, freeBytes: UInt64, availableBytes: UInt64)
    {
        var info = statvfs()
        try systemCall("statvfs", path) { statvfs(path, &info) }
        let block = UInt64(info.f_frsize)
        return (blockSize: block, totalBytes: UInt64(info.f_blocks) * block,
                freeBytes: UInt64(info.f_bfree) * block, availableBytes: UInt64(info.f_bavail) * block)
    }
}
