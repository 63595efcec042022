import CLinux
import DiskImage
import Glibc
import LinuxBlock
import PrintableText
import SandboxDiff

/// `save` of a squashfs or erofs partition (OpenWrt's, Home Assistant OS's roots): such a filesystem takes no
/// changes, so it is made anew from the sandbox's whole tree by Debian's mksquashfs / mkfs.erofs with the
/// image's compressor, block size and options (read from its superblock, see ReadOnlyBuildOptions), into an
/// unnamed file of ours, then written over the partition; the rest of the partition becomes zeros.
/// The tools store the tree's symlinks as symlinks (never following them) and write only to the file they are
/// handed as fd 3 (/proc/self/fd/3): nothing in the tree or in a directory can name where they write.
public final class ReadOnlyRebuild {
    public let options: ReadOnlyBuildOptions
    /// The built filesystem, unnamed (O_TMPFILE, or created and unlinked at once), and its size.
    private let fd: Int32
    public let sizeBytes: UInt64

    /// Builds the filesystem of `tree` in `directory` (the output's: the space it takes is the output's kind).
    public init(tree: String, options: ReadOnlyBuildOptions, directory: String) throws(SaveError) {
        let fd = try Self.unnamedFile(in: directory)
        do {
            sizeBytes = try Self.build(tree: tree, options: options, into: fd)
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
        self.options = options
    }

    private static func build(tree: String, options: ReadOnlyBuildOptions, into fd: Int32) throws(SaveError) -> UInt64 {
        let argv = options.type == .squashfs
            ? ["mksquashfs", tree, "/proc/self/fd/3"] + options.arguments
            : ["mkfs.erofs"] + options.arguments + ["/proc/self/fd/3", tree]
        // erofs has a checker: nothing is written over the partition that it would not pass.
        let check = options.type == .erofs ? ["fsck.erofs", "/proc/self/fd/3"] : nil
        for command in [argv, check].compactMap({ $0 }) {
            do {
                _ = try Command.run(command, passing: [fd])
            } catch {
                throw SaveError("\(command[0]) of the sandbox's tree: \(error.stderr.isEmpty ? "status \(error.status)" : error.stderr)",
                                errno: command == argv ? EIO : EUCLEAN)
            }
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SaveError("fstat the built \(options.type.rawValue)", errno: errno) }
        return UInt64(info.st_size)
    }

    deinit { close(fd) }

    /// Writes the filesystem over `partition` of the image open as `image`: the partition zeroed first (holes
    /// punched), then the built file's blocks that are not zero. The caller has checked that it fits.
    public func write(into image: Int32, partition: Partition) throws(SaveError) {
        guard sizeBytes <= partition.sizeBytes else { throw SaveError("the rebuilt filesystem is larger than its partition", errno: ENOSPC) }
        var buffer = [UInt8](repeating: 0, count: SparseCopy.chunk)
        if clinux_fallocate(image, clinux_FALLOC_FL_PUNCH_HOLE | clinux_FALLOC_FL_KEEP_SIZE,
                            Int64(partition.startByte), Int64(partition.sizeBytes)) != 0 {
            // A filesystem without holes: zeros written.
            guard errno == EOPNOTSUPP else { throw SaveError("zero partition \(partition.number) of the output", errno: errno) }
            var done: UInt64 = 0
            while done < partition.sizeBytes {
                let length = Int(min(UInt64(buffer.count), partition.sizeBytes - done))
                let count = buffer.withUnsafeBytes { pwrite(image, $0.baseAddress, length, off_t(partition.startByte + done)) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { throw SaveError("zero partition \(partition.number) of the output", errno: count < 0 ? errno : EIO) }
                done += UInt64(count)
            }
        }
        var offset: UInt64 = 0
        while offset < sizeBytes {
            let length = Int(min(UInt64(buffer.count), sizeBytes - offset))
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, off_t(offset)) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw SaveError("read the built \(options.type.rawValue)", errno: count < 0 ? errno : EIO) }
            try SparseCopy.writeNonZero(buffer, count: count, to: image, at: partition.startByte + offset)
            offset += UInt64(count)
        }
    }

    /// A file nobody can name: O_TMPFILE, or where the filesystem has none, one created and unlinked at once.
    private static func unnamedFile(in directory: String) throws(SaveError) -> Int32 {
        let fd = open(directory, clinux_O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600)
        if fd >= 0 { return fd }
        guard errno == EOPNOTSUPP || errno == EISDIR else { throw SaveError("create a file in \(directory)", errno: errno) }
        var template = Array("\(directory)/.imgsandbox-rebuild-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { clinux_mkstemp_cloexec($0.baseAddress!) }
        guard made >= 0 else { throw SaveError("create a file in \(directory)", errno: errno) }
        unlink(template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        return made
    }
}

/// How to make a squashfs or erofs again as the image's was made: the tool's options, from the superblock.
public struct ReadOnlyBuildOptions: Sendable, Equatable {
    public let type: FilesystemType
    public let arguments: [String]
    /// squashfs made with -no-xattrs: xattrs the sandbox adds are not kept (the caller says so).
    public let dropsXattrs: Bool

    /// `head`: the partition's first 4 KiB. `erofsHelp`: `mkfs.erofs --help` (what this version can write).
    public init(type: FilesystemType, head: [UInt8], erofsHelp: String = "") throws(SaveError) {
        self.type = type
        switch type {
        case .squashfs:
            (arguments, dropsXattrs) = try Self.squashfs(head)
        case .erofs:
            arguments = try Self.erofs(head, help: erofsHelp)
            dropsXattrs = false
        default:
            throw SaveError("\(type.rawValue) is not a read-only filesystem to rebuild", errno: EINVAL)
        }
    }

    private static func le16(_ b: [UInt8], _ at: Int) -> UInt32 { UInt32(b[at]) | UInt32(b[at + 1]) << 8 }
    private static func le32(_ b: [UInt8], _ at: Int) -> UInt32 { le16(b, at) | le16(b, at + 2) << 16 }

    // squashfs 4 superblock: block_size at 12, compression at 20, flags at 24, version at 28; the compressor's
    // options (flag 0x400) in an uncompressed metadata block right after it, at 96.
    static let squashfsCompressors = [1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"]
    static let squashfsFlags: [(bit: UInt32, set: Bool, option: String)] = [
        (0x0001, true, "-noI"), (0x0002, true, "-noD"), (0x0008, true, "-noF"), (0x0010, true, "-no-fragments"),
        (0x0020, true, "-always-use-fragments"), (0x0040, false, "-no-duplicates"), (0x0080, false, "-no-exports"),
        (0x0100, true, "-noX"), (0x0200, true, "-no-xattrs"), (0x0800, true, "-noId"),
    ]

    static func squashfs(_ sb: [UInt8]) throws(SaveError) -> ([String], Bool) {
        guard sb.count >= 96, sb[0..<4].elementsEqual("hsqs".utf8), le16(sb, 28) == 4 else {
            throw SaveError("the partition holds no squashfs 4 superblock", errno: EINVAL)
        }
        let blockSize = le32(sb, 12), flags = le16(sb, 24), id = Int(le16(sb, 20))
        guard let compressor = squashfsCompressors[id] else { throw SaveError("squashfs compressor \(id) is unknown", errno: ENOTSUP) }
        var arguments = ["-comp", compressor, "-b", "\(blockSize)"]
        for flag in squashfsFlags where (flags & flag.bit != 0) == flag.set { arguments.append(flag.option) }
        if flags & 0x0400 != 0 {
            // A metadata block header (length, 0x8000: stored uncompressed), then the compressor's own struct.
            guard sb.count >= 98 else { throw SaveError("squashfs compressor options cut short", errno: EUCLEAN) }
            let header = le16(sb, 96), length = Int(header & 0x7fff)
            guard header & 0x8000 != 0, length <= 64, sb.count >= 98 + length else {
                throw SaveError("squashfs compressor options are not a plain block of at most 64 bytes", errno: EUCLEAN)
            }
            arguments += squashfsCompressorOptions(compressor, Array(sb[98..<(98 + length)]))
        }
        arguments += ["-noappend", "-no-recovery", "-exit-on-error", "-quiet", "-no-progress"]
        return (arguments, flags & 0x0200 != 0)
    }

    /// mksquashfs's -X options for what the image's compressor options say (squashfs-tools' *_wrapper.c).
    static func squashfsCompressorOptions(_ compressor: String, _ o: [UInt8]) -> [String] {
        func int(_ at: Int) -> UInt32? { o.count >= at + 4 ? le32(o, at) : nil }
        switch compressor {
        case "gzip":
            guard let level = int(0), o.count >= 8 else { return [] }
            let strategies = [(0x2, "filtered"), (0x4, "huffman_only"), (0x8, "run_length_encoded"), (0x10, "fixed")]
                .filter { Int(le16(o, 6)) & $0.0 != 0 }.map(\.1)
            return ["-Xcompression-level", "\(level)", "-Xwindow-size", "\(le16(o, 4))"]
                + (strategies.isEmpty ? [] : ["-Xstrategy", strategies.joined(separator: ",")])
        case "xz":
            guard let dictionary = int(0), let filters = int(4) else { return [] }
            let bcj = [(1, "x86"), (2, "powerpc"), (4, "ia64"), (8, "arm"), (16, "armthumb"), (32, "sparc")]
                .filter { Int(filters) & $0.0 != 0 }.map(\.1)
            return ["-Xdict-size", "\(dictionary)"] + (bcj.isEmpty ? [] : ["-Xbcj", bcj.joined(separator: ",")])
        case "lz4":
            return int(4).map { $0 & 1 != 0 ? ["-Xhc"] : [] } ?? []
        case "zstd":
            return int(0).map { ["-Xcompression-level", "\($0)"] } ?? []
        case "lzo":
            let names = ["lzo1x_1", "lzo1x_1_11", "lzo1x_1_12", "lzo1x_1_15", "lzo1x_999"]
            guard let algorithm = int(0), Int(algorithm) < names.count, let level = int(4) else { return [] }
            return ["-Xalgorithm", names[Int(algorithm)]] + (algorithm == 4 ? ["-Xcompression-level", "\(level)"] : [])
        default:
            return []
        }
    }

    // erofs superblock at 1024: blkszbits at 12, uuid at 48, volume name at 64, feature_incompat at 80,
    // available_compr_algs at 84 (with COMPR_CFGS), sb_extslots at 13; the algorithms' configurations follow
    // the superblock (128 + 16 per extra slot), each a le16 length and its bytes.
    static let erofsAlgorithms = ["lz4hc", "lzma", "deflate", "zstd"]

    static func erofs(_ head: [UInt8], help: String) throws(SaveError) -> [String] {
        guard head.count >= 1024 + 128, le32(head, 1024) == 0xE0F5_E1E2 else {
            throw SaveError("the partition holds no erofs superblock", errno: EINVAL)
        }
        let sb = Array(head[1024...])
        let words = Set(help.split(whereSeparator: { !$0.isLetter && !$0.isNumber && $0 != "-" }).map(String.init))
        // An option this version has: a help line that starts with it.
        func offers(_ option: String) -> Bool {
            help.split(separator: "\n").contains { $0.drop(while: { $0 == " " }).hasPrefix(option) }
        }
        var arguments = ["--quiet"]
        let blockSize = 1 << Int(sb[12])
        if blockSize != 4096 {
            guard offers("-b#") else { throw SaveError("erofs with \(blockSize)-byte blocks: mkfs.erofs here makes 4096-byte blocks only", errno: ENOTSUP) }
            arguments.append("-b\(blockSize)")
        }
        let incompat = le32(sb, 80)
        guard incompat & 0x8 == 0 else { throw SaveError("erofs over several devices cannot be rebuilt", errno: ENOTSUP) }
        if incompat & 0x3 != 0 {  // ZERO_PADDING or COMPR_CFGS: compressed
            let algorithms = incompat & 0x2 != 0 ? le16(sb, 84) : 1
            guard let first = (0..<erofsAlgorithms.count).first(where: { algorithms & (1 << $0) != 0 }) else {
                throw SaveError("erofs compression algorithms \(algorithms) are unknown", errno: ENOTSUP)
            }
            let name = erofsAlgorithms[first]
            guard words.contains(name) else {
                throw SaveError("the image's erofs is compressed with \(name == "lz4hc" ? "lz4" : name), which mkfs.erofs here cannot write", errno: ENOTSUP)
            }
            arguments.append("-z\(name)")
            // lz4's configuration: max_distance, then max_pclusterblks (the physical cluster, -C).
            let configs = 128 + 16 * Int(sb[13])
            if incompat & 0x2 != 0, first == 0, sb.count >= configs + 6, le16(sb, configs) >= 4 {
                let blocks = le16(sb, configs + 4)
                if blocks > 1 { arguments.append("-C\(Int(blocks) * blockSize)") }
            }
        }
        if incompat & 0x10 != 0 { arguments.append("-Eztailpacking") }
        if incompat & 0x20 != 0 { arguments.append("-Efragments") }
        let uuid = sb[48..<64]
        if uuid.contains(where: { $0 != 0 }) {
            let hex = uuid.map { String($0 >> 4, radix: 16) + String($0 & 15, radix: 16) }
            let groups = [0..<4, 4..<6, 6..<8, 8..<10, 10..<16].map { hex[$0].joined() }
            arguments.append("-U" + groups.joined(separator: "-"))
        }
        let label = sb[64..<80].prefix { $0 != 0 }
        if !label.isEmpty {
            guard offers("-L") else { throw SaveError("the image's erofs has a label, which mkfs.erofs here cannot set", errno: ENOTSUP) }
            arguments.append("-L\(String(decoding: label, as: UTF8.self))")
        }
        return arguments
    }
}

extension ReadOnlyRebuild {
    /// squashfs holds user., trusted. and security. xattrs only (mksquashfs drops the rest, POSIX ACLs among them,
    /// saying no more than "Unrecognised xattr prefix"): the changed paths of `sandboxRoot` whose xattrs a
    /// squashfs output loses, escaped for the log.
    public static func xattrsSquashfsDrops(_ changes: [Change], sandboxRoot: String) throws(SaveError) -> [String] {
        let kept = ["user.", "trusted.", "security."].map { Array($0.utf8) }
        var lost: [String] = []
        do {
            let root = try Directory(root: sandboxRoot)
            for change in changes where change.kind == .added || change.aspects.contains(.xattrs) {
                var components = change.rawPath.split(separator: UInt8(ascii: "/")).map(Array.init)
                guard let name = components.popLast() else { continue }
                var directory = root
                for component in components { directory = try directory.child(component) }
                if try directory.xattrs(name).contains(where: { x in !kept.contains { x.name.starts(with: $0) } }) {
                    lost.append(PathText.escape(change.rawPath))
                }
            }
        } catch {
            throw SaveError(error.description, errno: error.errno)
        }
        return lost
    }
}
