import Glibc

extension SandboxFileSystem {
    /// Open flags for the hidden mount. With the writeback cache the kernel reads pages of files opened
    /// write-only (to fill partial pages) and applies O_APPEND itself, as in libfuse's passthrough_hp.
    func hiddenOpenFlags(_ flags: Int32) -> Int32 {
        guard options.writebackCache else { return flags }
        var flags = flags & ~O_APPEND
        if flags & O_ACCMODE == O_WRONLY { flags = (flags & ~O_ACCMODE) | O_RDWR }
        return flags
    }
}
