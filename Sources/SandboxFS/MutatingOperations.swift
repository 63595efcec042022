import LinuxBlock

/// What a FUSE operation may change in a sandbox's tree.
enum TreeChange: Equatable {
    /// An entry of a directory is made, removed or replaced (the directory's mtime moves with it).
    case entry
    /// An entry moves (rename): both places, with everything below them.
    case move
    /// A node gains a name (link): its link count changes under every name it has, and the directory
    /// gets an entry.
    case newName
    /// A node's content, attributes or xattrs.
    case node
    /// An open: when for writing, the node (its writes, passthrough ones too, never reach the daemon).
    case nodeIfWriting
    /// Writes through a handle: journaled at the handle's open for writing.
    case throughWritableHandle
}

extension FuseOperation {
    /// The table of mutating operations: the dispatcher journals from it before asking the backend
    /// (`SandboxFileSystem.journaled`), and dm's diff and save trust that journal, so an operation that
    /// changes the tree without an entry here loses its changes there. No `default:` on purpose: a new
    /// operation must say what it changes.
    var treeChange: TreeChange? {
        switch self {
        case .mknod, .mkdir, .symlink, .create, .unlink, .rmdir: .entry
        case .rename: .move
        case .link: .newName
        case .setattr, .setxattr, .removexattr: .node
        case .open: .nodeIfWriting
        case .write, .fallocate, .copyFileRange: .throughWritableHandle
        // An O_TMPFILE file has no name until a LINK gives it one (journaled there).
        case .tmpfile: nil
        case .lookup, .forget, .batchForget, .getattr, .readlink, .read, .release, .fsync, .opendir, .readdir,
             .readdirplus, .releasedir, .fsyncdir, .statfs, .getxattr, .listxattr, .lseek: nil
        }
    }
}

/// A mutating request's arguments, as its journal record needs them.
enum JournalTarget {
    case entry(parent: UInt64, name: RawName)
    case move(parent: UInt64, name: RawName, newParent: UInt64, newName: RawName)
    case newName(node: UInt64, parent: UInt64, name: RawName)
    case node(UInt64)
    case open(node: UInt64, flags: Int32)

    var nodes: [UInt64] {
        switch self {
        case .entry(let parent, _): [parent]
        case .move(let parent, _, let newParent, _): [parent, newParent]
        case .newName(let node, let parent, _): [node, parent]
        case .node(let id), .open(let id, _): [id]
        }
    }

    var change: TreeChange {
        switch self {
        case .entry: .entry
        case .move: .move
        case .newName: .newName
        case .node: .node
        case .open: .nodeIfWriting
        }
    }
}

extension SandboxFileSystem {
    /// Runs the mutating operation `op` after journaling what its table entry says it may change, where
    /// the node's sandbox keeps a journal (dm). A request that then fails leaves a journaled path that
    /// compares equal. Targets outside a sandbox (the virtual tree, FAT partitions) are not journaled.
    func journaled(_ op: FuseOperation, _ target: JournalTarget, _ body: () throws -> Reply) throws -> Reply {
        try journal(op, target)
        return try body()
    }

    private func journal(_ op: FuseOperation, _ target: JournalTarget) throws {
        guard op.treeChange == target.change else {
            // A dispatcher bug: say so, and make diff compare the whole trees rather than trust the journal.
            logger.error("\(op.name) journaled as \(target.change), but the table says \(op.treeChange.map { "\($0)" } ?? "no change")")
            for id in target.nodes { registry.journal(of: id)?.giveUp() }
            return
        }
        switch target {
        case .entry(let parent, let name):
            try recordEntry(in: parent, name)
        case .move(let parent, let name, let newParent, let newName):
            // Moved directories are compared with all they hold (both places: an exchange swaps them).
            try recordEntry(in: parent, name, tree: true)
            try recordEntry(in: newParent, newName, tree: true)
        case .newName(let node, let parent, let name):
            // The file gains a name: its link count changes under every name it has.
            try recordNode(node)
            try recordEntry(in: parent, name)
        case .node(let id):
            try recordNode(id)
        case .open(let id, let flags):
            if Self.writes(flags) { try recordNode(id) }
        }
    }

    /// Only nodes of a journaled sandbox (one registry look-up for the others: nothing to record).
    private func recordEntry(in parent: UInt64, _ name: RawName, tree: Bool = false) throws {
        guard registry.journal(of: parent) != nil else { return }
        try withPass(parent) { ctx in try ctx.withPathFD { ctx.recordEntry($0, name, tree: tree) } }
    }

    private func recordNode(_ id: UInt64) throws {
        guard registry.journal(of: id) != nil else { return }
        try withPass(id) { ctx in try ctx.withPathFD { ctx.recordNode($0) } }
    }
}
