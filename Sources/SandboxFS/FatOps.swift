import CFuse
import CLinux
import DiskImage
import FATFS
import Glibc
import LinuxBlock

/// Operations on a FAT partition's nodes, served from FATFS (no kernel vfat needed). What FAT cannot hold
/// (symlinks, hard links, device nodes, owners, xattrs) is refused as Linux vfat refuses it.
extension SandboxFileSystem {
    /// Runs `body` on the partition's volume, holding its gate so teardown waits for it. A pristine view that
    /// was released for being idle is attached again first.
    func withFat<R>(_ serial: UInt64, _ body: (FatEntry) throws -> R) throws -> R {
        for attempt in 0..<2 {
            let entry = registry.fatTarget(serial)
            if let entry, entry.gate.acquire() != nil {
                defer { entry.gate.release() }
                return try body(entry)
            }
            guard attempt == 0, try reattachPristine(serial) else { break }
        }
        throw SystemError("resolve", "FAT partition \(serial) is gone", errno: ESTALE)
    }

    /// FATFS's errors as SystemError; a corrupt structure (EIO) also gets its one log line here.
    func fat<R>(_ body: () throws(FATError) -> R) throws -> R {
        do {
            return try body()
        } catch {
            if error.errno == EIO { logger.error("FAT: \(error.message)") }
            throw SystemError("fat", error.message, errno: error.errno)
        }
    }

    /// Owner and permissions as Linux vfat shows them under the partition's fstab options: FATFS gives the
    /// read-only attribute as a missing write bit.
    static func fatStat(_ a: FATAttr, serial: UInt64, _ ownership: FATMountOptions) -> stat {
        var st = stat()
        st.st_ino = numericCast((NodeTable.fatID(serial: serial, node: a.id) ?? 0) & ~(UInt64(1) << 63))
        st.st_mode = a.mode & UInt32(SwiftGlibc.S_IFMT)
            | ownership.permissions(directory: a.isDirectory, readOnly: a.mode & 0o200 == 0)
        st.st_nlink = numericCast(a.nlink)
        st.st_uid = ownership.uid
        st.st_gid = ownership.gid
        st.st_size = numericCast(a.size)
        st.st_blocks = numericCast(a.blocks)
        st.st_blksize = numericCast(a.blockSize)
        st.st_atim = timespec(tv_sec: Int(a.atime.seconds), tv_nsec: Int(a.atime.nanoseconds))
        st.st_mtim = timespec(tv_sec: Int(a.mtime.seconds), tv_nsec: Int(a.mtime.nanoseconds))
        st.st_ctim = timespec(tv_sec: Int(a.ctime.seconds), tv_nsec: Int(a.ctime.nanoseconds))
        return st
    }

    private func fatName(_ name: RawName, _ op: String) throws -> String {
        guard name.isPlainComponent else { throw SystemError(op, "name \(name.display)", errno: name.componentErrno) }
        guard let text = name.string else { throw SystemError(op, "non-UTF-8 name on a FAT partition", errno: EINVAL) }
        return text
    }

    private func writable(_ entry: FatEntry, _ op: String) throws {
        if entry.readOnly { throw SystemError(op, "\(entry.label) is read-only", errno: EROFS) }
    }

    private func fatEntryReply(_ e: FatEntry, _ serial: UInt64, _ a: FATAttr) -> Reply {
        .entry(id: NodeTable.fatID(serial: serial, node: a.id) ?? 0, attr: Self.fatStat(a, serial: serial, e.ownership),
               attrTimeout: options.passthroughTimeout, entryTimeout: options.passthroughTimeout)
    }

    func fatLookup(_ serial: UInt64, _ parent: UInt64, _ name: RawName) throws -> Reply {
        let text = try fatName(name, "lookup")
        do {
            return try withFat(serial) { e in fatEntryReply(e, serial, try fat { () throws(FATError) in try e.volume.lookup(parent: parent, name: text) }) }
        } catch let error as SystemError where error.errno == ENOENT {
            // Names change only through this daemon, which the kernel sees.
            return .negativeEntry(timeout: options.passthroughTimeout)
        }
    }

    func fatForget(_ serial: UInt64, _ node: UInt64, _ count: UInt64) {
        registry.fatVolume(serial)?.forget(node, count: count)
    }

    func fatGetattr(_ serial: UInt64, _ node: UInt64) throws -> Reply {
        try withFat(serial) { e in
            .attr(Self.fatStat(try fat { () throws(FATError) in try e.volume.getattr(node) }, serial: serial, e.ownership),
                  timeout: options.passthroughTimeout)
        }
    }

    func fatSetattr(_ serial: UInt64, _ node: UInt64, _ attr: stat, _ toSet: Int32) throws -> Reply {
        try withFat(serial) { e in
            try writable(e, "setattr")
            if toSet & FUSE_SET_ATTR_SIZE != 0, !RequestUID.isRoot {   // FAT has no holes: a longer file takes its clusters now
                let size = try fat { () throws(FATError) in try e.volume.getattr(node) }.size
                let growth = UInt64(max(attr.st_size, 0)) - min(UInt64(max(attr.st_size, 0)), size)
                if growth > 0 { try requireUserShare(fat: e.volume, bytes: Int(clamping: growth), e.label) }
            }
            if toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 {
                // FAT keeps no owners: vfat accepts only a chown to the owner its options give every entry.
                let same = (toSet & FUSE_SET_ATTR_UID == 0 || attr.st_uid == e.ownership.uid)
                    && (toSet & FUSE_SET_ATTR_GID == 0 || attr.st_gid == e.ownership.gid)
                guard same else { throw SystemError("chown", "FAT has no owners", errno: EPERM) }
            }
            let now = FATTime.now()
            func time(_ set: Int32, _ setNow: Int32, _ value: timespec) -> FATTime? {
                if toSet & setNow != 0 { return now }
                if toSet & set != 0 { return FATTime(seconds: Int64(value.tv_sec), nanoseconds: Int32(value.tv_nsec)) }
                return nil
            }
            let a = try fat { () throws(FATError) in
                try e.volume.setAttributes(node, size: toSet & FUSE_SET_ATTR_SIZE != 0 ? UInt64(max(attr.st_size, 0)) : nil,
                                           atime: time(FUSE_SET_ATTR_ATIME, FUSE_SET_ATTR_ATIME_NOW, attr.st_atim),
                                           mtime: time(FUSE_SET_ATTR_MTIME, FUSE_SET_ATTR_MTIME_NOW, attr.st_mtim),
                                           mode: toSet & FUSE_SET_ATTR_MODE != 0 ? UInt32(attr.st_mode) : nil)
            }
            return .attr(Self.fatStat(a, serial: serial, e.ownership), timeout: options.passthroughTimeout)
        }
    }

    func fatMkdir(_ serial: UInt64, _ parent: UInt64, _ name: RawName, mode: mode_t) throws -> Reply {
        let text = try fatName(name, "mkdir")
        return try withFat(serial) { e in
            try writable(e, "mkdir")
            try requireUserShare(fat: e.volume, e.label)
            return fatEntryReply(e, serial, try fat { () throws(FATError) in try e.volume.mkdir(parent: parent, name: text, mode: mode) })
        }
    }

    func fatUnlink(_ serial: UInt64, _ parent: UInt64, _ name: RawName, directory: Bool) throws -> Reply {
        let text = try fatName(name, directory ? "rmdir" : "unlink")
        return try withFat(serial) { e in
            try writable(e, directory ? "rmdir" : "unlink")
            try fat { () throws(FATError) in
                if directory { try e.volume.rmdir(parent: parent, name: text) } else { try e.volume.unlink(parent: parent, name: text) }
            }
            return .ok
        }
    }

    func fatRename(_ serial: UInt64, _ parent: UInt64, _ name: RawName, _ newParent: UInt64, _ newName: RawName,
                   flags: UInt32) throws -> Reply {
        let from = try fatName(name, "rename"), to = try fatName(newName, "rename")
        return try withFat(serial) { e in
            try writable(e, "rename")
            try requireUserShare(fat: e.volume, e.label)
            try fat { () throws(FATError) in
                try e.volume.rename(parent: parent, name: from, newParent: newParent, newName: to,
                                    flags: FATRenameFlags(rawValue: flags))
            }
            return .ok
        }
    }

    func fatCreate(_ serial: UInt64, _ parent: UInt64, _ name: RawName, mode: mode_t, flags: Int32) throws -> Reply {
        let text = try fatName(name, "create")
        return try withFat(serial) { e in
            try writable(e, "create")
            try requireUserShare(fat: e.volume, e.label)
            var a: FATAttr
            do {
                a = try fat { () throws(FATError) in try e.volume.create(parent: parent, name: text, mode: mode) }
            } catch let error as SystemError where error.errno == EEXIST && flags & O_EXCL == 0 {
                a = try fat { () throws(FATError) in try e.volume.lookup(parent: parent, name: text) }
                if flags & O_TRUNC != 0 { a = try fat { () throws(FATError) in try e.volume.setAttributes(a.id, size: 0) } }
            }
            let fh = try addFatHandle(serial, a.id, writable: true)
            return .created(id: NodeTable.fatID(serial: serial, node: a.id) ?? 0, attr: Self.fatStat(a, serial: serial, e.ownership),
                            timeout: options.passthroughTimeout, fh: fh)
        }
    }

    func fatOpen(_ serial: UInt64, _ node: UInt64, flags: Int32, directory: Bool) throws -> Reply {
        try withFat(serial) { e in
            let writing = flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0
            if writing { try writable(e, "open") }
            let a = try fat { () throws(FATError) in try e.volume.getattr(node) }
            if a.isDirectory != directory { throw SystemError("open", e.label, errno: directory ? ENOTDIR : EISDIR) }
            if flags & O_TRUNC != 0, !directory { _ = try fat { () throws(FATError) in try e.volume.setAttributes(node, size: 0) } }
            let fh = try addFatHandle(serial, node, writable: writing)
            return .opened(fh: fh, keepCache: flags & O_TRUNC == 0 && !directory, cacheReaddir: directory)
        }
    }

    private func addFatHandle(_ serial: UInt64, _ node: FATNodeID, writable: Bool) throws -> UInt64 {
        guard let fh = registry.open(.fat(FatHandle(serial: serial, node: node, writable: writable)), in: serial) else {
            throw SystemError("open", "FAT partition \(serial) is going away", errno: ESTALE)
        }
        if writable, !RequestUID.isRoot, let id = NodeTable.fatID(serial: serial, node: node) { userWriters.add(fh: fh, node: id) }
        return fh
    }

    func fatHandle(_ fh: UInt64) -> FatHandle? {
        if case .fat(let handle)? = registry.handle(fh) { return handle }
        return nil
    }

    func fatRead(_ req: fuse_req_t, _ h: FatHandle, size: Int, offset: off_t) {
        respond(req, "read") {
            try withFat(h.serial) { e in
                .bytes(try fat { () throws(FATError) in try e.volume.read(h.node, at: UInt64(max(offset, 0)), count: size) })
            }
        }
    }

    func fatWrite(_ h: FatHandle, buffers: UnsafeMutablePointer<fuse_bufvec>,
                  offset: off_t) throws -> Reply {
        guard h.writable else { throw SystemError("write", "FAT file opened read-only", errno: EBADF) }
        var bytes = [UInt8](repeating: 0, count: fuse_buf_size(buffers))
        let copied = bytes.withUnsafeMutableBytes { cfuse_write_buf_to_mem(buffers, $0.baseAddress, $0.count) }
        guard copied >= 0 else { throw SystemError("write", "FAT request buffer", errno: Int32(clamping: -copied)) }
        let count = Int(copied)
        return try withFat(h.serial) { e in
            try writable(e, "write")
            let data = count == bytes.count ? bytes : Array(bytes.prefix(count))
            return try withUserShare(node: NodeTable.fatID(serial: h.serial, node: h.node) ?? 0, bytes: count, e.label, fat: e.volume) {
                .written(try fat { () throws(FATError) in try e.volume.write(h.node, at: UInt64(max(offset, 0)), data) })
            }
        }
    }

    func fatFsync(_ serial: UInt64) throws -> Reply {
        try withFat(serial) { e in
            if !e.readOnly { try fat { () throws(FATError) in try e.volume.flush() } }
            return .ok
        }
    }

    /// SEEK_DATA and SEEK_HOLE (the kernel does the others): a FAT file has no holes.
    func fatLseek(_ serial: UInt64, _ node: FATNodeID, offset: off_t, whence: Int32) throws -> Reply {
        let size = try withFat(serial) { e in try fat { () throws(FATError) in try e.volume.getattr(node) }.size }
        guard offset >= 0, UInt64(offset) < size else { throw SystemError("lseek", "past the end", errno: ENXIO) }
        return .lseek(whence == clinux_SEEK_HOLE ? Int64(size) : Int64(offset))
    }

    func fatStatfs(_ serial: UInt64) throws -> Reply {
        try withFat(serial) { e in
            let f = e.volume.statfs()
            var st = statvfs()
            st.f_bsize = numericCast(f.blockSize)
            st.f_frsize = numericCast(f.fragmentSize)
            st.f_blocks = numericCast(f.blocks)
            st.f_bfree = numericCast(f.freeBlocks)
            st.f_bavail = numericCast(f.availableBlocks)
            st.f_files = numericCast(f.files)
            st.f_ffree = numericCast(f.freeFiles)
            st.f_favail = numericCast(f.freeFiles)
            st.f_namemax = numericCast(f.nameMax)
            if e.readOnly { st.f_flag |= numericCast(ST_RDONLY) }
            return .statfs(st)
        }
    }

    /// readdir(plus) of a FAT directory from FATFS's resumable offsets. Plus entries carry their node and
    /// attributes (one lookup each, as the kernel counts them), so `ls -l` needs no lookup per name; the
    /// ones that do not fit in the reply are forgotten again. A damaged entry goes without a node: its
    /// lookup answers the error.
    func fatReaddir(_ req: fuse_req_t, _ h: FatHandle, size: Int,
                    offset: off_t, plus: Bool) throws -> [UInt8] {
        try withFat(h.serial) { e in
            let from = UInt64(max(offset, 0)), limit = max(size / 32, 1)
            let entries = try fat { () throws(FATError) in
                plus ? try e.volume.readDirectoryPlus(h.node, from: from, limit: limit)
                     : try e.volume.readDirectory(h.node, from: from, limit: limit).map { ($0, nil) }
            }
            var buffer = [UInt8](repeating: 0, count: max(size, 0))
            var used = 0, handed = 0
            buffer.withUnsafeMutableBytes { raw in
                guard let base = raw.baseAddress else { return }
                for (entry, attr) in entries {
                    var st = stat()
                    if let attr {
                        st = Self.fatStat(attr, serial: h.serial, e.ownership)
                    } else {
                        st.st_ino = 1  // no identity: the kernel looks the name up when it needs it
                        st.st_mode = entry.isDirectory ? UInt32(SwiftGlibc.S_IFDIR) : UInt32(SwiftGlibc.S_IFREG)
                    }
                    let remaining = size - used
                    let out = base.advanced(by: used).assumingMemoryBound(to: CChar.self)
                    let needed: Int = entry.name.withCString { name in
                        if plus {
                            var p = fuse_entry_param()
                            p.attr = st
                            if let attr, let id = NodeTable.fatID(serial: h.serial, node: attr.id) {
                                p.ino = id
                                p.attr_timeout = options.passthroughTimeout
                                p.entry_timeout = options.passthroughTimeout
                            }
                            return fuse_add_direntry_plus(req, out, remaining, name, &p, off_t(entry.nextOffset))
                        }
                        return fuse_add_direntry(req, out, remaining, name, &st, off_t(entry.nextOffset))
                    }
                    if needed > remaining { break }
                    used += needed
                    handed += 1
                }
            }
            // Entries that did not fit, and any whose ID cannot be handed out: their lookup is undone.
            for (index, (_, attr)) in entries.enumerated() {
                guard let attr else { continue }
                if index >= handed || NodeTable.fatID(serial: h.serial, node: attr.id) == nil { e.volume.forget(attr.id, count: 1) }
            }
            return Array(buffer.prefix(used))
        }
    }
}
