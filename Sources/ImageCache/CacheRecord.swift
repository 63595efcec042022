import Glibc

/// What a cache file was made from, recorded next to it (NAME.HASH.meta): the source file's device,
/// inode, size and mtime, and the cache file's own inode and size. The cache file is reused only while
/// all of them still match.
struct CacheRecord: Equatable {
    struct Identity: Equatable {
        var device: UInt64
        var inode: UInt64
        var size: UInt64
        var mtimeSeconds: Int64
        var mtimeNanoseconds: Int64

        init(_ info: stat) {
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
            size = UInt64(info.st_size)
            mtimeSeconds = Int64(info.st_mtim.tv_sec)
            mtimeNanoseconds = Int64(info.st_mtim.tv_nsec)
        }

        init(device: UInt64, inode: UInt64, size: UInt64, mtimeSeconds: Int64, mtimeNanoseconds: Int64) {
            self.device = device
            self.inode = inode
            self.size = size
            self.mtimeSeconds = mtimeSeconds
            self.mtimeNanoseconds = mtimeNanoseconds
        }
    }

    static let header = "imgsandbox-cache 1"

    var source: String
    /// ImageFileName.label of the file (`xz`, `zip`, `qcow2` ...).
    var format: String
    var identity: Identity
    var cacheInode: UInt64
    var cacheSize: UInt64

    func encoded() -> String {
        [Self.header, "source \(source)", "format \(format)", "device \(identity.device)",
         "inode \(identity.inode)", "size \(identity.size)", "mtime \(identity.mtimeSeconds).\(identity.mtimeNanoseconds)",
         "cache-inode \(cacheInode)", "cache-size \(cacheSize)", ""].joined(separator: "\n")
    }

    /// nil for anything but a complete record of this version (a torn or foreign file is not trusted).
    static func parse(_ text: String) -> CacheRecord? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count == 10, lines[0] == header, lines[9].isEmpty else { return nil }
        var fields: [String: String] = [:]
        for line in lines[1..<9] {
            guard let space = line.firstIndex(of: " ") else { return nil }
            fields[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        let mtime = fields["mtime"]?.split(separator: ".", omittingEmptySubsequences: false) ?? []
        guard let source = fields["source"], let format = fields["format"], !format.isEmpty,
              let device = fields["device"].flatMap({ UInt64($0) }), let inode = fields["inode"].flatMap({ UInt64($0) }),
              let size = fields["size"].flatMap({ UInt64($0) }), mtime.count == 2,
              let seconds = Int64(mtime[0]), let nanoseconds = Int64(mtime[1]),
              let cacheInode = fields["cache-inode"].flatMap({ UInt64($0) }),
              let cacheSize = fields["cache-size"].flatMap({ UInt64($0) }) else { return nil }
        return CacheRecord(source: source, format: format,
                           identity: Identity(device: device, inode: inode, size: size, mtimeSeconds: seconds, mtimeNanoseconds: nanoseconds),
                           cacheInode: cacheInode, cacheSize: cacheSize)
    }
}
