import Glibc
import LinuxBlock

/// The files of one cached image: DIR/BASE.img, DIR/BASE.meta, DIR/BASE.PID.partial (and BASE.stage.PID.partial).
struct CacheEntry: Sendable {
    let directory: String
    let base: String

    init(directory: String, base: String) {
        self.directory = directory
        self.base = base
    }

    /// BASE = NAME (shortened to fit a file name) + a hash of the compressed file's path, so images of the
    /// same name in two image folders do not share an entry.
    init(directory: String, image: String, file: String) {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
        for byte in file.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        self.init(directory: directory, base: "\(String(image.utf8.prefix(150)) ?? "image").\(String(repeating: "0", count: 16 - hex.count))\(hex)")
    }

    var dataPath: String { "\(directory)/\(base).img" }
    var recordPath: String { "\(directory)/\(base).meta" }
    var partialName: String { "\(base).\(getpid()).partial" }
    var partialPath: String { "\(directory)/\(partialName)" }
    var stageName: String { "\(base).stage.\(getpid()).partial" }
    var stagePath: String { "\(directory)/\(stageName)" }
    var recordPartialPath: String { "\(directory)/\(base).\(getpid()).meta.partial" }

    /// The cached image, held in use, when its record says it was made from this very file (and the record
    /// describes this very cache file); nil otherwise.
    func lease(matching identity: CacheRecord.Identity, source: String) -> CachedImage? {
        guard let record = readRecord(), record.identity == identity, record.source == source else { return nil }
        guard let fd = try? FileDescriptor.open(dataPath, O_RDONLY | O_NOFOLLOW) else { return nil }
        var held = stat(), named = stat()
        // After the lock, the name must still be this file (an evictor may have removed it meanwhile).
        guard flock(fd.raw, LOCK_SH) == 0, fstat(fd.raw, &held) == 0, stat(dataPath, &named) == 0,
              held.st_ino == named.st_ino, held.st_dev == named.st_dev,
              UInt64(held.st_ino) == record.cacheInode, UInt64(held.st_size) == record.cacheSize else { return nil }
        return CachedImage(path: dataPath, recordPath: recordPath, fd: fd, size: record.cacheSize, reused: true)
    }

    func readRecord() -> CacheRecord? {
        guard let fd = try? FileDescriptor.open(recordPath, O_RDONLY | O_NOFOLLOW) else { return nil }
        var bytes = [UInt8](repeating: 0, count: 8192)
        let count = bytes.withUnsafeMutableBytes { read(fd.raw, $0.baseAddress, $0.count) }
        guard count > 0, count < bytes.count else { return nil }
        return CacheRecord.parse(String(decoding: bytes[0..<count], as: UTF8.self))
    }

    /// Removes the entry if no one holds its image (exclusive flock without waiting). Returns the bytes
    /// it occupied, or nil when it is in use.
    func removeIfUnused() -> UInt64? {
        guard let fd = try? FileDescriptor.open(dataPath, O_RDONLY | O_NOFOLLOW) else {
            unlink(recordPath)
            return 0
        }
        guard flock(fd.raw, LOCK_EX | LOCK_NB) == 0 else { return nil }
        var info = stat()
        let bytes = fstat(fd.raw, &info) == 0 ? UInt64(info.st_blocks) * 512 : 0
        // The record first: an image without its record is never reused.
        unlink(recordPath)
        unlink(dataPath)
        return bytes
    }

    /// Makes a finished, fsynced partial file the entry: the old record goes first, then the image is
    /// renamed into place, then the new record (naming the image's inode) is written and renamed.
    func commit(record: CacheRecord) throws(CacheError) {
        unlink(recordPath)
        guard rename(partialPath, dataPath) == 0 else { throw .system(operation: "rename", path: partialPath, errno: errno) }
        do throws(CacheError) {
            try syncDirectory()
            let fd = try CacheError.open(recordPartialPath, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode: 0o600)
            let text = Array(record.encoded().utf8)
            let written = text.withUnsafeBytes { write(fd.raw, $0.baseAddress, $0.count) }
            let error = errno
            let synced = written == text.count && fsync(fd.raw) == 0
            guard synced else {
                unlink(recordPartialPath)
                if written >= 0 && written < text.count || error == ENOSPC { throw .noRoom(file: recordPath, reason: "the disk is full") }
                throw .system(operation: "write", path: recordPartialPath, errno: error)
            }
            guard rename(recordPartialPath, recordPath) == 0 else {
                unlink(recordPartialPath)
                throw .system(operation: "rename", path: recordPartialPath, errno: errno)
            }
            try syncDirectory()
        } catch {
            unlink(recordPath)
            unlink(dataPath)
            throw error
        }
    }

    private func syncDirectory() throws(CacheError) {
        let fd = try CacheError.open(directory, O_RDONLY | O_DIRECTORY)
        guard fsync(fd.raw) == 0 else { throw .system(operation: "fsync", path: directory, errno: errno) }
    }
}
