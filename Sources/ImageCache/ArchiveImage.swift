import CArchive
import Glibc
import Logging
import PrintableText

/// The disk image inside a .zip, .7z or .tar(.xz/.gz/.zst/.bz2), read by libarchive with only the
/// format and filter its name says enabled (nothing is probed). The archive is listed first (headers
/// only, for zip and 7z from their central directory), the image chosen, its declared size checked, and
/// then only that entry's data is streamed out.
///
/// The image: the one entry whose name ends in a disk-image suffix (ImageFileName: raw, a raw image
/// compressed (NAME.img.xz, as some vendors zip it), or a VM disk). Several: the largest by declared size,
/// ties by name (bytewise), logged. A compressed VM disk or an archive inside the archive is not read
/// (logged once each). An image-named entry that is
/// not a regular file (a symlink, hard link, device) refuses the archive: nothing is ever followed.
struct ArchiveImage {
    enum EntryKind: Equatable {
        case raw
        case compressed(Compression)
        case vm(VMDiskFormat)
    }

    struct Entry {
        /// Position among the archive's entries.
        let index: Int
        let path: String
        /// Declared (uncompressed) size.
        let size: UInt64
        let kind: EntryKind
        /// The name as messages print it (an archive's names are untrusted bytes).
        var printed: String { PathText.escape(path) }
    }

    let fd: Int32
    let format: ArchiveFormat
    let filter: Compression?
    let file: String

    /// Entries an archive may have: listing more is refused (a header can claim millions).
    static let maxEntries = 10_000
    /// A declared size beyond this is absurd, whatever the limit.
    static let maxDeclaredSize: UInt64 = 1 << 50

    /// Lists the archive and returns the image it holds, or refuses it (no image, a linked image entry,
    /// an absurd size or count) or finds no room (a declared size above `limit`).
    func choose(limit: UInt64, logger: Logger, image: String) throws(CacheError) -> Entry {
        let archive = try open()
        defer { archive_read_free(archive) }
        var images: [Entry] = []
        var index = 0
        while true {
            var header: OpaquePointer?
            let rc = archive_read_next_header(archive, &header)
            if rc == ARCHIVE_EOF { break }
            guard rc == ARCHIVE_OK || rc == ARCHIVE_WARN, let header else { throw failure(archive, "reading entry \(index)'s header") }
            guard index < Self.maxEntries else { throw .refused(file: file, reason: "the archive has more than \(Self.maxEntries) entries") }
            defer { index += 1 }
            guard let raw = archive_entry_pathname(header) ?? archive_entry_pathname_utf8(header) else { continue }
            let path = String(cString: raw)
            let printed = PathText.escape(path)
            let disk: EntryKind
            switch ImageFileName.parse(path.split(separator: "/").last.map(String.init) ?? path)?.kind {
            case nil: continue
            case .raw?: disk = .raw
            case .compressed(let compression)?: disk = .compressed(compression)
            case .vm(let vm, nil)?: disk = .vm(vm)
            case .vm(_, _?)?, .archive?:
                logger.notice("image \(image): ignoring \(printed) in \(file): a compressed VM disk or an archive inside an archive is not read (unpack it into the images folder)")
                continue
            }
            guard archive_entry_filetype(header) == S_IFREG, archive_entry_hardlink(header) == nil else {
                throw .refused(file: file, reason: "its entry \(printed) is not a regular file (a link or device; never followed)")
            }
            let size = archive_entry_size(header)
            guard archive_entry_size_is_set(header) != 0, size >= 0, UInt64(size) <= Self.maxDeclaredSize else {
                throw .refused(file: file, reason: "its entry \(printed) declares no plausible size (\(size))")
            }
            images.append(Entry(index: index, path: path, size: UInt64(size), kind: disk))
        }
        guard let chosen = images.max(by: { $0.size != $1.size ? $0.size < $1.size : Array($1.path.utf8).lexicographicallyPrecedes(Array($0.path.utf8)) }) else {
            throw .refused(file: file, reason: "the archive holds no disk image (an entry named *.img, .raw, .wic, .sdimg, possibly with .xz, .gz, .zst or .bz2, or .qcow2, .vmdk, .vdi, .vhdx, .vhd)")
        }
        if images.count > 1 {
            logger.notice("image \(image): \(file) holds \(images.count) disk images (\(images.map(\.printed).joined(separator: ", "))); serving the largest, \(chosen.printed)")
        }
        guard chosen.size <= limit else {
            throw .noRoom(file: file, reason: "the archive declares \(chosen.size) bytes for \(chosen.printed), more than the cache may hold (\(limit) bytes: --cache-max, else the cache's filesystem)")
        }
        return chosen
    }

    /// Streams `entry`'s data (exactly its declared size, else an error) to `sink`, with the archive's
    /// bytes read so far.
    func extract(_ entry: Entry, into buffer: UnsafeMutableRawBufferPointer, cancelled: () -> Bool,
                 sink: (UnsafeRawBufferPointer, _ archiveBytes: UInt64) throws(CacheError) -> Void) throws(CacheError) {
        let archive = try open()
        defer { archive_read_free(archive) }
        var header: OpaquePointer?
        for index in 0...entry.index {
            let rc = archive_read_next_header(archive, &header)
            guard rc == ARCHIVE_OK || rc == ARCHIVE_WARN, header != nil else { throw failure(archive, "reading entry \(index)'s header") }
        }
        guard let raw = archive_entry_pathname(header) ?? archive_entry_pathname_utf8(header), String(cString: raw) == entry.path else {
            throw .sourceChanged(file: file)
        }
        var produced: UInt64 = 0
        var filled = 0
        while true {
            if cancelled() { throw .cancelled(file: file) }
            let count = archive_read_data(archive, buffer.baseAddress! + filled, buffer.count - filled)
            if count < 0 { throw failure(archive, "reading \(entry.printed) at \(produced + UInt64(filled))") }
            filled += count
            guard produced + UInt64(filled) <= entry.size else {
                throw .refused(file: file, reason: "\(entry.printed) holds more data than the \(entry.size) bytes its header declares")
            }
            // Whole buffers but the last, so the writer's pages line up with the file's blocks.
            if filled == buffer.count || (count == 0 && filled > 0) {
                try sink(UnsafeRawBufferPointer(rebasing: buffer[0..<filled]), UInt64(max(0, archive_filter_bytes(archive, -1))))
                produced += UInt64(filled)
                filled = 0
            }
            if count == 0 { break }
        }
        guard produced == entry.size else {
            throw .corrupt(file: file, format: label, offset: UInt64(max(0, archive_filter_bytes(archive, -1))), outputOffset: produced,
                           reason: "\(entry.printed) ends after \(produced) of its \(entry.size) declared bytes")
        }
    }

    private var label: String { format.rawValue + (filter.map { "." + $0.rawValue } ?? "") }

    /// A libarchive reader over the file from its start, with only this archive's format and filter.
    private func open() throws(CacheError) -> OpaquePointer {
        guard lseek(fd, 0, SEEK_SET) == 0 else { throw .system(operation: "lseek", path: file, errno: errno) }
        guard let archive = archive_read_new() else { throw .system(operation: "archive_read_new", path: file, errno: ENOMEM) }
        switch format {
        case .zip: archive_read_support_format_zip(archive)
        case .sevenZip: archive_read_support_format_7zip(archive)
        case .tar: archive_read_support_format_tar(archive)
        }
        switch filter {
        case nil: break
        case .xz: archive_read_support_filter_xz(archive)
        case .gzip: archive_read_support_filter_gzip(archive)
        case .zstd: archive_read_support_filter_zstd(archive)
        case .bzip2: archive_read_support_filter_bzip2(archive)
        }
        guard archive_read_open_fd(archive, fd, 1 << 20) == ARCHIVE_OK else {
            let error = failure(archive, "opening it")
            archive_read_free(archive)
            throw error
        }
        return archive
    }

    private func failure(_ archive: OpaquePointer, _ what: String) -> CacheError {
        let message = archive_error_string(archive).map { String(cString: $0) } ?? "libarchive error \(archive_errno(archive))"
        return .corrupt(file: file, format: label, offset: UInt64(max(0, archive_filter_bytes(archive, -1))), outputOffset: 0,
                        reason: "\(what): \(message)")
    }
}
