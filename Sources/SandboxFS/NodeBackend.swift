import CFuse
import Glibc
import LinuxBlock

/// What serves a node: the virtual tree above the sandboxes, a FAT partition (FATFS) or the passthrough to
/// a sandbox's hidden mount. Chosen once per request from the node ID (`SandboxFileSystem.backend`); every
/// node operation then asks it, so what a kind of node does, and what it refuses with which errno, is found
/// in one type. Operations on an open handle dispatch on the handle instead (OpenHandle).
protocol NodeBackend {
    func lookup(_ req: fuse_req_t, _ name: RawName) throws -> Reply
    func getattr(fh: UInt64?) throws -> Reply
    func setattr(_ req: fuse_req_t, _ attr: stat, _ toSet: Int32, fh: UInt64?) throws -> Reply
    func readlink() throws -> Reply
    func mknod(_ req: fuse_req_t, _ name: RawName, mode: mode_t, rdev: dev_t) throws -> Reply
    func mkdir(_ req: fuse_req_t, _ name: RawName, mode: mode_t) throws -> Reply
    func unlink(_ name: RawName) throws -> Reply
    func rmdir(_ req: fuse_req_t, _ name: RawName) throws -> Reply
    func symlink(_ req: fuse_req_t, _ name: RawName, target: RawName) throws -> Reply
    /// `name` in this directory to `newName` in `target`'s.
    func rename(_ name: RawName, to target: any NodeBackend, _ newName: RawName, flags: UInt32) throws -> Reply
    /// A new name for this node in the directory `target`.
    func link(into target: any NodeBackend, _ newName: RawName) throws -> Reply
    func open(_ req: fuse_req_t, flags: Int32) throws -> Reply
    func create(_ req: fuse_req_t, _ name: RawName, mode: mode_t, flags: Int32) throws -> Reply
    func tmpfile(_ req: fuse_req_t, mode: mode_t, flags: Int32) throws -> Reply
    func opendir() throws -> Reply
    func statfs() throws -> Reply
    func setxattr(_ name: RawName, value: [UInt8], flags: Int32) throws -> Reply
    func getxattr(_ name: RawName, size: Int) throws -> Reply
    func listxattr(_ req: fuse_req_t, size: Int) throws -> Reply
    func removexattr(_ name: RawName) throws -> Reply
}

extension SandboxFileSystem {
    /// The backend of node `id`: ESTALE for an unknown node, EIO for the root of a broken sandbox.
    func backend(_ id: UInt64) throws -> any NodeBackend {
        switch registry.node(id) {
        case .pass?: return PassBackend(fs: self, id: id)
        case .fat(let serial, let node)?: return FatBackend(fs: self, serial: serial, node: node)
        case let kind?: return VirtualBackend(fs: self, id: id, kind: kind)
        case nil:
            if registry.isBrokenRoot(id) {
                throw SystemError("resolve", "root of a broken sandbox (rmdir it)", errno: EIO)
            }
            throw SystemError("resolve", "unknown node \(id)", errno: ESTALE)
        }
    }
}
