import Synchronization

/// The FUSE operations this daemon serves, named as the kernel's opcodes (lowercase), for the per-operation
/// request counts (`status --json`, `fuse_requests`). Operations it does not implement (flush, getlk,
/// ioctl, ...) are answered ENOSYS by libfuse without reaching it, and the kernel stops sending most of them.
public enum FuseOperation: Int, CaseIterable, Sendable {
    case lookup, forget, batchForget, getattr, setattr, readlink, mknod, mkdir, unlink, rmdir, symlink, rename,
         link, open, create, tmpfile, read, write, release, fsync, opendir, readdir, readdirplus, releasedir,
         fsyncdir, statfs, setxattr, getxattr, listxattr, removexattr, fallocate, lseek, copyFileRange

    /// The kernel's name (FUSE_BATCH_FORGET -> "batch_forget").
    public var name: String {
        switch self {
        case .batchForget: "batch_forget"
        case .copyFileRange: "copy_file_range"
        default: "\(self)"
        }
    }
}

/// Requests received per operation since the mount, counted where every request enters (Trampolines.swift):
/// one relaxed atomic add each, so the counts cost nothing measurable next to a round trip.
final class RequestCounts: Sendable {
    private final class Counter: Sendable {
        let value = Atomic<UInt64>(0)
    }
    private let counters = FuseOperation.allCases.map { _ in Counter() }

    func count(_ operation: FuseOperation) {
        counters[operation.rawValue].value.add(1, ordering: .relaxed)
    }

    /// Every operation's count by its kernel name, zeros included (a reader diffs two snapshots).
    var snapshot: [String: UInt64] {
        Dictionary(uniqueKeysWithValues: FuseOperation.allCases.map { ($0.name, counters[$0.rawValue].value.load(ordering: .relaxed)) })
    }
}
