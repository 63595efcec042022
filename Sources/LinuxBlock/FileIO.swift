import Glibc

/// Small file helpers for sysfs, procfs, /dev and the daemon's own folders: whole-file reads and writes,
/// directory listing. Paths here are host paths (never image content), so following symlinks is fine
/// (sysfs is made of them).
public enum FileIO {
    /// Reads a whole (small, possibly size-less procfs/sysfs) file as UTF-8.
    static func readText(_ path: String) throws(SystemError) -> String {
        let fd = try FileDescriptor.open(path, O_RDONLY)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = try systemCall("read", path) {
                chunk.withUnsafeMutableBytes { read(fd.raw, $0.baseAddress, $0.count) }
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Writes `text` with one write(2) (sysfs attributes take a whole value per write).
    static func writeText(_ path: String, _ text: String) throws(SystemError) {
        let fd = try FileDescriptor.open(path, O_WRONLY | O_TRUNC)
        let bytes = Array(text.utf8)
        let written = try systemCall("write", path) {
            bytes.withUnsafeBytes { write(fd.raw, $0.baseAddress, $0.count) }
        }
        // sysfs consumes a value whole; a short write elsewhere would be a truncated value.
        if written != bytes.count { throw SystemError("write", path, errno: EIO) }
    }

    /// Trimmed content of a one-value file ("4\n" -> "4").
    static func readValue(_ path: String) throws(SystemError) -> String {
        trimmed(try readText(path))
    }

    static func trimmed(_ text: some StringProtocol) -> String {
        guard let first = text.firstIndex(where: { !$0.isWhitespace }),
              let last = text.lastIndex(where: { !$0.isWhitespace }) else { return "" }
        return String(text[first...last])
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// Entry names of a directory, without "." and ".."; empty if it cannot be opened. The one readdir loop
    /// for host directories (the FUSE layer's, over image content, is Passthrough+Dir).
    public static func list(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
