import Glibc
import LinuxBlock

/// Directories under the run directory: created 0700 so only root reaches the hidden mounts.
enum PrivateDirectory {
    static func create(_ path: String) throws(SystemError) {
        if mkdir(path, 0o700) == 0 { return }
        let error = errno
        var info = stat()
        guard error == EEXIST, lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw SystemError("mkdir", path, errno: error)
        }
    }

    static func remove(_ path: String) throws(SystemError) {
        guard rmdir(path) == 0 || errno == ENOENT else { throw SystemError("rmdir", path, errno: errno) }
    }

    /// Entry names without "." and ".."; empty if the directory cannot be opened.
    static func list(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
