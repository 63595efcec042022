import LinuxBlock

/// "No such file or directory (ENOENT)", as the daemon prints errno.
func errnoName(_ code: Int32) -> String { SystemError.describe(code) }
