import Glibc
import LinuxBlock

/// Directories under the run directory: created 0700 so only root reaches the hidden mounts.
public enum PrivateDirectory {
    public static func create(_ path: String) throws(SystemError) {
        if mkdir(path, 0o700) == 0 { return }
        let error = errno
        var info = stat()
        guard error == EEXIST, lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw SystemError("mkdir", path, errno: error)
        }
    }

    public static func remove(_ path: String) throws(SystemError) {
        guard rmdir(path) == 0 || errno == ENOENT else { throw SystemError("rmdir", path, errno: errno) }
    }
}
