import CLinux
import Dispatch
import FATFS
import Glibc
import LinuxBlock
import Sandbox

/// The other partitions of a sandbox or of `pristine/`: each has its own serial (its own inodes; renames and
/// links between serials fail with EXDEV) and covers its mount point directory in the tree that holds it, the
/// way a kernel mount does: looking that directory up yields the partition's root.
extension SandboxFileSystem {
    /// Opens `ref`'s partitions; `rootMount` is the root's lease. A partition whose mount point is missing in
    /// the tree (or that cannot be opened) is logged and left out; the rest keeps working.
    func attachPartitions(_ ref: SandboxRef, rootMount: FdLease) -> AttachedParts {
        var made = AttachedParts()
        for part in ref.partitions {
            let point = part.mount.mountPoint
            do {
                let (container, relative) = Self.container(of: point, in: ref, attached: made)
                guard let lease = container == ref.serial ? rootMount : made.entries[container]?.mount else {
                    throw SystemError("attach", "tree \(container)", errno: ESTALE)
                }
                let (key, pin) = try mountPointKey(container, lease, relative)
                var pinned = false
                defer { if !pinned { pin.retire() } }
                switch part.content {
                case .mounted(let path):
                    let partRef = SandboxRef(image: ref.image, name: ref.name, serial: part.serial, mountPath: path,
                                             readOnly: ref.readOnly, journal: part.journal)
                    var entry = SandboxEntry(ref: partRef, mount: try openMount(partRef), owner: ref.serial)
                    entry.pin = pin
                    made.entries[part.serial] = entry
                case .fat(let volume, _):
                    guard NodeTable.fatID(serial: part.serial, node: FATVolume.rootID) != nil else {
                        throw SystemError("attach", "partition serial \(part.serial)", errno: EOVERFLOW)
                    }
                    made.fats[part.serial] = FatEntry(volume: volume, gate: FdLease(fd: -1), owner: ref.serial,
                                                      readOnly: ref.readOnly || part.mount.readOnly,
                                                      label: "\(ref.image)/\(ref.name)\(point)",
                                                      ownership: part.mount.fatOptions, pin: pin)
                }
                pinned = true
                made.covers[key] = part.serial
                made.order.append(part.serial)
            } catch {
                logger.error("\(ref.image)/\(ref.name): partition \(part.mount.partition.number) not shown at \(point): \(error)")
            }
        }
        return made
    }

    /// The deepest attached Linux partition (or the root) whose mount point holds `point`, and the rest of the path.
    private static func container(of point: String, in ref: SandboxRef, attached: AttachedParts) -> (UInt64, [String]) {
        let components = point.split(separator: "/").map(String.init)
        var best: (UInt64, [String]) = (ref.serial, components)
        var depth = 0
        for part in ref.partitions where attached.entries[part.serial] != nil {
            let prefix = part.mount.components
            if prefix.count > depth, prefix.count < components.count, Array(components.prefix(prefix.count)) == prefix {
                best = (part.serial, Array(components.dropFirst(prefix.count)))
                depth = prefix.count
            }
        }
        return best
    }

    /// (serial, dev, ino) of the directory at `components` below the tree's root, walked without following,
    /// and an O_PATH fd of it that keeps its inode (and so that key) while the partition is attached.
    private func mountPointKey(_ serial: UInt64, _ mount: FdLease, _ components: [String]) throws -> (InodeKey, FdLease) {
        try mount.with(orErrno: ESTALE) { rootFD in
            var fd = FileDescriptor(adopting: try systemCall("dup", "tree \(serial)") { dup(rootFD) })
            for name in components {
                let parent = fd.raw
                fd = FileDescriptor(adopting: try systemCall("open mount point", components.joined(separator: "/")) {
                    openat(parent, name, clinux_O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC)
                })
            }
            let st = try fstatFD(fd.raw, "mount point")
            return (InodeKey(serial: serial, dev: UInt64(st.st_dev), ino: UInt64(st.st_ino)), FdLease(fd))
        }
    }

    /// The root of partition `serial` with one more lookup (what looking up its mount point yields).
    func partitionRoot(_ serial: UInt64) throws -> (id: UInt64, attr: stat) {
        let (pass, isFat) = registry.partition(serial)
        if isFat {
            return try withFat(serial) { entry in
                let attr = try fat { () throws(FATError) in try entry.volume.getattr(FATVolume.rootID) }
                return (NodeTable.fatID(serial: serial, node: FATVolume.rootID) ?? 0, Self.fatStat(attr, serial: serial, entry.ownership))
            }
        }
        guard let mount = pass else { throw SystemError("lookup", "partition \(serial) is gone", errno: ESTALE) }
        return try mount.lease.with(orErrno: ESTALE) { fd in try register(fd: fd, serial: serial, mountID: mount.id) }
    }

    /// Waits out the partitions' requests in flight and closes every fd kept in them.
    func retireParts(_ parts: [HeldFD]) {
        for part in parts {
            part.lease.retireAndWait()
            cache.dropSandbox(part.serial)
        }
    }

    /// The mount point under `parent` named `name` is covered by a partition: rmdir or rename of it is EBUSY.
    func checkNotMountPoint(_ ctx: PassContext, parentFD: Int32, _ name: RawName, _ op: String) throws {
        var st = stat()
        let found = name.withCString { fstatat(parentFD, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0
        guard found, UInt32(st.st_mode) & UInt32(SwiftGlibc.S_IFMT) == UInt32(SwiftGlibc.S_IFDIR) else { return }
        let key = InodeKey(serial: ctx.node.serial, dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))
        if registry.partition(covering: key) != nil { throw SystemError(op, "\(name.display) is a partition's mount point", errno: EBUSY) }
    }
}
