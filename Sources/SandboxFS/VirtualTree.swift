import CFuse
import CLinux
import Glibc
import LinuxBlock
import Sandbox

/// One line of a virtual directory listing, snapshotted at opendir so offsets stay stable.
struct VirtualEntry {
    let name: String
    let ino: UInt64
    let type: UInt32
}

/// The tree above the sandboxes: `/` lists images, `/IMAGE/` holds `pristine/` and `sandboxes/`, `/IMAGE/sandboxes/`
/// lists the image's sandboxes. All of it is read-only except mkdir/rmdir in `sandboxes/`.
extension SandboxFileSystem {
    static let sandboxesDirName = "sandboxes"

    /// st_ino of a virtual node: 1 for `/`, top bit set for the rest (passthrough inodes never set it).
    static func virtualInode(_ id: UInt64) -> UInt64 { id == 1 ? 1 : (UInt64(1) << 63) | id }

    func virtualAttr(_ id: UInt64) -> stat {
        var st = stat()
        st.st_ino = numericCast(Self.virtualInode(id))
        // Root's, and the access group's when there is one: other users never reach a sandbox or pristine/.
        st.st_mode = UInt32(SwiftGlibc.S_IFDIR) | (options.accessGroup == nil ? 0o700 : 0o750)
        st.st_nlink = 2
        st.st_uid = 0
        st.st_gid = options.accessGroup ?? 0
        st.st_blksize = 4096
        st.st_atim = startTime
        st.st_mtim = startTime
        st.st_ctim = startTime
        return st
    }

    func virtualEntry(_ id: UInt64) throws -> Reply {
        guard id != 0 else {
            logger.error("lookup in the virtual tree: node IDs exhausted (ENFILE)")
            throw SystemError("lookup", "virtual tree", errno: ENFILE)
        }
        return .entry(id: id, attr: virtualAttr(id), attrTimeout: options.virtualTimeout, entryTimeout: options.virtualTimeout)
    }

    func virtualLookup(_ kind: NodeKind, _ name: RawName) throws -> Reply {
        guard let text = name.string else { throw SystemError("lookup", "non-UTF-8 name in the virtual tree", errno: ENOENT) }
        switch kind {
        case .root:
            guard provider.imageNames().contains(text) else { throw SystemError("lookup", "image \(text)", errno: ENOENT) }
            return try virtualEntry(registry.imageNodes([text])[0])
        case .image(let image):
            guard text == Self.sandboxesDirName || text == Self.pristineDirName, provider.sandboxNames(image: image) != nil else {
                throw SystemError("lookup", "\(image)/\(text)", errno: ENOENT)
            }
            if text == Self.pristineDirName { return try pristineLookup(image) }
            return try virtualEntry(registry.sandboxesNode(image))
        case .sandboxes(let image):
            guard let ref = provider.sandbox(image: image, name: text) else {
                throw SystemError("lookup", "\(image)/sandboxes/\(text)", errno: ENOENT)
            }
            // Found, so that rmdir reaches us and can finish it; but nothing inside is served.
            if ref.broken { return brokenRootEntry(ref) }
            let root = try attach(ref)
            // The sandbox root: short entry timeout (the list changes), long attr timeout (passthrough).
            return .entry(id: root.id, attr: root.attr, attrTimeout: options.passthroughTimeout,
                          entryTimeout: options.virtualTimeout)
        case .pass, .fat:
            throw SystemError("lookup", "passthrough node in the virtual tree", errno: EIO)
        }
    }

    /// The entry of a broken sandbox's root: a node without anything behind it (requests on it get EIO).
    private func brokenRootEntry(_ ref: SandboxRef) -> Reply {
        let id = registry.brokenRoot(image: ref.image, name: ref.name)
        return .entry(id: id, attr: virtualAttr(id), attrTimeout: 0, entryTimeout: 0)
    }

    func virtualListing(_ id: UInt64, _ kind: NodeKind) throws -> [VirtualEntry] {
        let dirType = UInt32(DT_DIR)
        var entries = [VirtualEntry(name: ".", ino: Self.virtualInode(id), type: dirType),
                       VirtualEntry(name: "..", ino: 1, type: dirType)]
        switch kind {
        case .root:
            let names = provider.imageNames().sorted()
            entries += zip(names, registry.imageNodes(names)).map {
                VirtualEntry(name: $0, ino: Self.virtualInode($1), type: dirType)
            }
        case .image(let image):
            guard provider.sandboxNames(image: image) != nil else { throw SystemError("opendir", image, errno: ENOENT) }
            let child = registry.sandboxesNode(image), pristine = registry.pseudoInodes(image, ["/pristine"])[0]
            entries.append(VirtualEntry(name: Self.pristineDirName, ino: Self.virtualInode(pristine), type: dirType))
            entries.append(VirtualEntry(name: Self.sandboxesDirName, ino: Self.virtualInode(child), type: dirType))
        case .sandboxes(let image):
            guard let names = provider.sandboxNames(image: image) else { throw SystemError("opendir", image, errno: ENOENT) }
            let sorted = names.sorted()
            entries += zip(sorted, registry.pseudoInodes(image, sorted)).map {
                VirtualEntry(name: $0, ino: Self.virtualInode($1), type: dirType)
            }
        case .pass, .fat:
            throw SystemError("opendir", "passthrough node in the virtual tree", errno: EIO)
        }
        return entries
    }

    /// Fills one readdir(plus) buffer from a snapshot. Plus entries carry node 0: attributes for display
    /// only, no lookup count (the kernel looks names up itself when it needs them).
    func virtualReaddir(_ req: fuse_req_t, _ entries: [VirtualEntry], size: Int, offset: off_t, plus: Bool) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: size)
        var used = 0
        guard offset >= 0, offset < entries.count else { return [] }
        buffer.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            for index in Int(offset)..<entries.count {
                let entry = entries[index]
                var st = stat()
                st.st_ino = numericCast(entry.ino)
                st.st_mode = entry.type << 12
                let remaining = size - used
                let needed: Int = entry.name.withCString { name in
                    let out = base.advanced(by: used).assumingMemoryBound(to: CChar.self)
                    if plus {
                        var e = fuse_entry_param()
                        e.attr = st
                        return fuse_add_direntry_plus(req, out, remaining, name, &e, off_t(index + 1))
                    }
                    return fuse_add_direntry(req, out, remaining, name, &st, off_t(index + 1))
                }
                if needed > remaining { break }
                used += needed
            }
        }
        return Array(buffer.prefix(used))
    }

    func virtualStatfs() -> statvfs {
        var st = statvfs()
        st.f_bsize = 4096
        st.f_frsize = 4096
        st.f_namemax = 255
        return st
    }
}
