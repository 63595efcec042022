import FATFS
import Glibc
import TestSupport
import Testing

/// A scratch directory removed with everything in it when the value goes away, pass or fail.
final class Scratch {
    let path: String

    init() {
        var template = Array("/tmp/fatfs-test.XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    deinit { _ = Shell.run(["rm", "-rf", path]) }
}

enum Shell {
    /// Runs a program with mtools' check of the drive geometry off and a fixed time zone and locale.
    @discardableResult
    static func run(_ argv: [String], stdin: String? = nil) -> (status: Int32, output: String) {
        Subprocess.run(argv, stdin: stdin, environment: ["MTOOLS_SKIP_CHECK": "1", "TZ": "UTC", "LC_ALL": "C.UTF-8"])
    }

    static func exists(_ name: String) -> Bool { Subprocess.exists(name) }

    static let haveTools = ["mkfs.vfat", "fsck.fat", "mcopy", "mmd", "mdir", "mtype"].allSatisfy(exists)
    static let toolsMissing = "needs dosfstools (mkfs.vfat, fsck.fat) and mtools (mcopy, mmd, mdir, mtype): run Tools/install-deps"
}

/// One mkfs.vfat configuration.
struct FATConfig: Sendable, CustomStringConvertible {
    var bits: Int
    var sectorSize: Int
    var sectorsPerCluster: Int
    var sizeKiB: Int

    var description: String { "FAT\(bits) -S \(sectorSize) -s \(sectorsPerCluster) \(sizeKiB) KiB" }

    /// Makes the image file; the test fails (and returns false) when mkfs.vfat refuses.
    func make(_ path: String, label: String = "TESTVOL") -> Bool {
        let r = Shell.run(["mkfs.vfat", "-C", "-F", "\(bits)", "-S", "\(sectorSize)", "-s", "\(sectorsPerCluster)",
                           "-n", label, "-i", "12345678", path, "\(sizeKiB)"])
        #expect(r.status == 0, "mkfs.vfat \(self): \(r.output)")
        return r.status == 0
    }
}

func readFile(_ path: String) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var st = stat()
    fstat(fd, &st)
    var out = [UInt8](repeating: 0, count: Int(st.st_size))
    var done = 0
    out.withUnsafeMutableBytes { b in
        while done < b.count {
            let n = read(fd, b.baseAddress! + done, b.count - done)
            if n <= 0 { break }
            done += n
        }
    }
    return Array(out[0..<done])
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { return }
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

/// An image file opened as a device (the whole file, or a byte range of it).
final class ImageFile {
    let fd: Int32
    let device: FileRegionDevice

    init(_ path: String, writable: Bool, offset: UInt64 = 0, size: UInt64? = nil) {
        fd = open(path, writable ? O_RDWR : O_RDONLY)
        var st = stat()
        fstat(fd, &st)
        device = FileRegionDevice(fd: fd, offset: offset, size: size ?? UInt64(st.st_size) - offset, writable: writable)
    }

    deinit { close(fd) }
}

extension FATVolume {
    /// The node of a path ("/a/b"), looked up from the root.
    func node(_ path: String) throws(FATError) -> FATAttr {
        var attr = try getattr(FATVolume.rootID)
        for part in path.split(separator: "/") { attr = try lookup(parent: attr.id, name: String(part)) }
        return attr
    }

    /// Every entry of a directory (all readdir continuations), "." and ".." left out.
    func list(_ id: FATNodeID, batch: Int = 7) throws(FATError) -> [FATDirectoryEntry] {
        var out: [FATDirectoryEntry] = []
        var offset: UInt64 = 0
        while true {
            let part = try readDirectory(id, from: offset, limit: batch)
            if part.isEmpty { break }
            out += part
            offset = part.last!.nextOffset
        }
        return out.filter { $0.name != "." && $0.name != ".." }
    }

    func readAll(_ id: FATNodeID) throws(FATError) -> [UInt8] {
        let size = try getattr(id).size
        return try read(id, at: 0, count: Int(size))
    }
}

/// Catches the errno of a throwing call (nil when it succeeds).
func errnoOf(_ body: () throws -> Void) -> Int32? {
    do { try body(); return nil } catch let error as FATError { return error.errno } catch { return -1 }
}

/// A host directory tree: relative path -> content (nil for a directory).
func hostTree(_ root: String, _ prefix: String = "") -> [String: [UInt8]?] {
    var out: [String: [UInt8]?] = [:]
    guard let dir = opendir(root + "/" + prefix) else { return out }
    defer { closedir(dir) }
    while let e = readdir(dir) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name == "." || name == ".." { continue }
        let rel = prefix.isEmpty ? name : prefix + "/" + name
        var st = stat()
        lstat(root + "/" + rel, &st)
        if st.st_mode & S_IFMT == S_IFDIR {
            out[rel] = .some(nil)
            out.merge(hostTree(root, rel)) { a, _ in a }
        } else {
            out[rel] = readFile(root + "/" + rel)
        }
    }
    return out
}

/// What the kernel's own vfat reads out of an image (mounted read-only through a loop device, which
/// autoclear frees at unmount), as a tree; nil when that cannot be tried: not root, or no vfat (this
/// machine; Tools/vm-test's kernel has it).
func kernelVfatTree(_ image: String, scratch: String) -> [String: [UInt8]?]? {
    let filesystems = Shell.run(["cat", "/proc/filesystems"]).output
    guard geteuid() == 0, filesystems.split(separator: "\n").contains(where: { $0.hasSuffix("\tvfat") }) else { return nil }
    let mnt = scratch + "/vfat-\(UInt32.random(in: 0...UInt32.max))"
    mkdir(mnt, 0o700)
    defer { rmdir(mnt) }
    let mounted = Shell.run(["mount", "-t", "vfat", "-o", "ro,loop", image, mnt])
    guard mounted.status == 0 else {
        Issue.record("mount -t vfat: \(mounted.output)")
        return [:]
    }
    defer { Shell.run(["umount", mnt]) }
    return hostTree(mnt)
}

/// What mtools reads out of an image (mcopy -s of the whole volume), as a tree.
func mtoolsTree(_ image: String, scratch: String) -> [String: [UInt8]?] {
    let dest = scratch + "/mtools-out-\(UInt32.random(in: 0...UInt32.max))"
    mkdir(dest, 0o755)
    defer { Shell.run(["rm", "-rf", dest]) }
    let listing = Shell.run(["mdir", "-b", "-i", image, "::/"])
    if !listing.output.split(separator: "\n").isEmpty {
        let r = Shell.run(["mcopy", "-s", "-n", "-i", image, "::/*", dest + "/"])
        #expect(r.status == 0, "mcopy out: \(r.output)")
    }
    return hostTree(dest)
}

/// The tree as FATFS reads it.
func volumeTree(_ volume: FATVolume, _ id: FATNodeID = FATVolume.rootID, _ prefix: String = "") throws -> [String: [UInt8]?] {
    var out: [String: [UInt8]?] = [:]
    for entry in try volume.list(id) {
        let rel = prefix.isEmpty ? entry.name : prefix + "/" + entry.name
        let attr = try volume.lookup(parent: id, name: entry.name)
        if attr.isDirectory {
            out[rel] = .some(nil)
            out.merge(try volumeTree(volume, attr.id, rel)) { a, _ in a }
        } else {
            out[rel] = try volume.readAll(attr.id)
        }
    }
    return out
}

/// fsck.fat -n on the image: (clean, what it said).
func fsck(_ image: String) -> (clean: Bool, output: String) {
    let r = Shell.run(["fsck.fat", "-n", "-V", image])
    let dirty = r.output.contains("Dirty bit") || r.output.contains("differences between boot sector")
    return (r.status == 0 && !dirty, r.output)
}

func describe(_ tree: [String: [UInt8]?]) -> String {
    tree.keys.sorted().map { k in tree[k]!.map { "\(k) (\($0.count) bytes)" } ?? "\(k)/" }.joined(separator: ", ")
}
