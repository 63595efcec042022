import FoundationEssentials
import Glibc
import PrintableText

/// A VM disk (qcow2, vmdk, vdi, vhdx, vhd) read through qemu-img, which gets the file as fd 3 and its
/// format from the file's suffix (never probed): `json:{"driver": FORMAT, "file": /proc/self/fd/3,
/// "backing": null}`, so no backing file is ever opened. Before anything else, `qemu-img info` must show
/// a disk that names no other file (no backing file, no external data file, every vmdk extent the file
/// itself); a vmdk that would make qemu open its extents even for `info` (a descriptor file, or a sparse
/// header with an embedded descriptor) is refused from its first sector, before qemu-img runs.
struct VMDisk {
    let format: VMDiskFormat
    /// The disk file (the image file itself, or its staged copy).
    let fd: Int32
    /// The image file, for messages.
    let file: String

    static let fdPath = "/proc/self/fd/3"
    static let infoTime: Duration = .seconds(60)

    var source: String {
        #"json:{"driver":"\#(format.rawValue)","file":{"driver":"file","filename":"\#(Self.fdPath)"},"backing":null}"#
    }

    /// The raw image's size once everything is checked.
    func check(job: Job) throws(CacheError) -> UInt64 {
        if format == .vmdk { try checkVMDKHeader() }
        let output = try HelperProcess(argv: ["qemu-img", "info", "--output=json", source], file: file)
            .run(passing: [fd], deadline: .now + Self.infoTime, job: job)
        guard case .object(let info)? = try? JSONDecoder().decode(JSONValue.self, from: Data(output)) else {
            throw .refused(file: file, reason: "qemu-img info printed no JSON object")
        }
        if let named = Self.otherFile(in: .object(info), depth: 0) {
            throw .refused(file: file, reason: "the \(format.rawValue) disk names another file (\(PathText.escape(named))); backing files, external data files and extents outside the image are never read")
        }
        guard case .string(format.rawValue)? = info["format"] else { throw .refused(file: file, reason: "qemu-img info reports another format") }
        guard case .number(let size)? = info["virtual-size"], size > 0, size < 0x1p62 else {
            throw .refused(file: file, reason: "qemu-img info reports no plausible virtual size")
        }
        return UInt64(size)
    }

    /// At most how many bytes the raw image allocates: what `qemu-img map` says holds data.
    func dataBytes(job: Job) throws(CacheError) -> UInt64 {
        let output = try HelperProcess(argv: ["qemu-img", "map", "--output=json", source], file: file)
            .run(passing: [fd], deadline: .now + Self.infoTime, job: job)
        guard case .array(let extents)? = try? JSONDecoder().decode(JSONValue.self, from: Data(output)) else {
            throw .refused(file: file, reason: "qemu-img map printed no JSON array")
        }
        var total: UInt64 = 0
        for case .object(let extent) in extents {
            if case .bool(true)? = extent["data"], case .number(let length)? = extent["length"], length >= 0, length < 0x1p62 {
                total += UInt64(length)
            }
        }
        return total
    }

    /// Converts the disk to raw into `target` (a file of the virtual size, all holes): qemu-img writes only
    /// what is not zero, so the result is sparse.
    func convert(into target: Int32, deadline: ContinuousClock.Instant, job: Job, started: () -> Void,
                 progress: (Double) -> Void) throws(CacheError) {
        var text = ""
        _ = try HelperProcess(argv: ["qemu-img", "convert", "-p", "-n", "--target-is-zero", source, "--target-image-opts",
                                     "driver=raw,file.driver=file,file.filename=/proc/self/fd/4"], file: file)
            .run(passing: [fd, target], deadline: deadline, job: job, started: started) { chunk in
                // "    (42.00/100%)\r", repeated.
                text = String((text + String(decoding: chunk, as: UTF8.self)).suffix(64))
                if let open = text.lastIndex(of: "("), let slash = text[open...].firstIndex(of: "/"),
                   let percent = Double(text[text.index(after: open)..<slash]) {
                    progress(min(max(percent, 0), 100) / 100)
                }
            }
    }

    /// qemu opens only the file itself for a sparse vmdk ("KDMV") with a non-zero capacity; a text
    /// descriptor, or a sparse header with capacity 0 (its embedded descriptor then lists the extents),
    /// makes it open every extent the descriptor names.
    private func checkVMDKHeader() throws(CacheError) {
        var header = [UInt8](repeating: 0, count: 20)
        let count = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count == header.count, header.starts(with: Array("KDMV".utf8)) else {
            throw .refused(file: file, reason: "only a single-file sparse vmdk is read (this one is a descriptor naming its data in other files)")
        }
        let capacity = header[12..<20].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard capacity > 0 else {
            throw .refused(file: file, reason: "the vmdk's header has no capacity: its embedded descriptor would name the extents")
        }
    }

    /// A file the disk names besides itself, anywhere in qemu-img info's JSON (backing file, data file,
    /// an extent's or child's filename); nil when there is none.
    static func otherFile(in value: JSONValue, depth: Int) -> String? {
        guard depth < 32 else { return "a nesting deeper than 32" }
        switch value {
        case .object(let members):
            for (key, member) in members.sorted(by: { $0.key < $1.key }) {
                if ["backing-filename", "full-backing-filename", "backing-filename-format", "data-file", "backing-image"].contains(key) {
                    if case .string(let name) = member { return name }
                    return key
                }
                if key == "filename", case .string(let name) = member, name != fdPath {
                    // qemu may print the options it was given as a json: filename: what it names counts.
                    guard name.hasPrefix("json:"), let nested = try? JSONDecoder().decode(JSONValue.self, from: Data(name.dropFirst(5).utf8)) else { return name }
                    if let found = otherFile(in: nested, depth: depth + 1) { return found }
                    continue
                }
                if let found = otherFile(in: member, depth: depth + 1) { return found }
            }
        case .array(let elements):
            for element in elements {
                if let found = otherFile(in: element, depth: depth + 1) { return found }
            }
        default: break
        }
        return nil
    }
}

/// Any JSON value (qemu-img's output is searched, not mapped to fixed types).
indirect enum JSONValue: Decodable {
    case object([String: JSONValue])
    case array([JSONValue])
    case string(String)
    case number(Double)
    case bool(Bool)
    case null

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }
}

extension ImageCache {
    /// Converts the VM disk on `diskFD` to raw into `writer`'s file with qemu-img, once it is checked.
    func convert(_ job: Job, _ format: VMDiskFormat, diskFD: Int32, into writer: inout SparseWriter) throws(CacheError) {
        let disk = VMDisk(format: format, fd: diskFD, file: job.file)
        let size = try disk.check(job: job)
        let data = try disk.dataBytes(job: job)
        logger.info("image \(job.image): converting \(job.file) (\(job.label), \(Self.mib(size)) MiB virtual, \(Self.mib(data)) MiB of data) to raw into \(writer.path)")
        // qemu-img writes past our writer: what it may allocate is reserved up front.
        try reserve(data, for: job)
        guard ftruncate(writer.fd, off_t(size)) == 0 else { throw .system(operation: "ftruncate", path: writer.path, errno: errno) }
        job.report(compressed: 0, decompressed: 0, total: size)
        // Generous for slow disks: 2 minutes plus 4 MiB/s of data.
        let deadline = ContinuousClock.now + .seconds(120) + .seconds(Int64(data / (4 << 20)))
        do {
            // Tests hold the job at the gate while qemu-img runs (to cancel it).
            try disk.convert(into: writer.fd, deadline: deadline, job: job, started: { firstOutput(job) }) { fraction in
                job.report(compressed: UInt64(Double(job.compressedSize) * fraction), decompressed: UInt64(Double(size) * fraction))
            }
        } catch .helperFailed(let file, _, _, let message) where message.contains("No space left") {
            throw .noRoom(file: file, reason: "the disk is full (qemu-img: \(message))")
        }
        writer.adoptWritten(size: size)
    }
}
