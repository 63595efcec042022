import DiskImage
import Glibc
import LinuxBlock
import Logging
import Sandbox
import SandboxDiff

/// save of squashfs/erofs partitions (the root or fstab's): made anew from the sandbox's tree (ReadOnlyRebuild).
extension SaveJob {
    /// Each read-only partition the sandbox changed, built from its tree, keyed by partition number; called with
    /// the sandbox frozen. An unchanged one is not built: the output keeps the image's bytes.
    static func rebuildReadOnly(_ trees: [Tree], sourceFD: Int32, output: String, logger: Logger) throws(SandboxError) -> [Int: ReadOnlyRebuild] {
        var rebuilt: [Int: ReadOnlyRebuild] = [:]
        let directory = String(output[..<(output.lastIndex(of: "/") ?? output.startIndex)])
        for tree in trees where tree.filesystem.isReadOnly && !tree.changes.isEmpty {
            let (partition, filesystem, point, changes, source) = (tree.partition, tree.filesystem, tree.point, tree.changes, tree.source)
            let what = "the \(filesystem.rawValue) of partition \(partition.number) (\(point))"
            let options = try step("read how \(what) was made") { () throws -> ReadOnlyBuildOptions in
                var head = [UInt8](repeating: 0, count: 4096)
                let count = head.withUnsafeMutableBytes { pread(sourceFD, $0.baseAddress, $0.count, off_t(partition.startByte)) }
                guard count == head.count else { throw SystemError("read the superblock of", what, errno: count < 0 ? errno : EIO) }
                let help = filesystem == .erofs ? (try? Command.run(["sh", "-c", "exec mkfs.erofs --help 2>&1"])) ?? "" : ""
                return try ReadOnlyBuildOptions(type: filesystem, head: head, erofsHelp: help)
            }
            if options.dropsXattrs, changes.contains(where: { $0.aspects.contains(.xattrs) }) {
                logger.notice("save: \(what) was made without xattrs (mksquashfs -no-xattrs), so is the output: the sandbox's xattrs there are left out")
            }
            if filesystem == .squashfs {
                let lost = try step("list the xattrs squashfs cannot hold") {
                    try ReadOnlyRebuild.xattrsSquashfsDrops(changes, sandboxRoot: source.sandboxRoot)
                }
                for path in lost { logger.notice("save: \(path) has xattrs outside user./trusted./security. (an ACL?), which squashfs cannot hold; left out") }
            }
            let started = ContinuousClock.now
            rebuilt[partition.number] = try step("make \(what) anew") {
                try ReadOnlyRebuild(tree: source.sandboxRoot, options: options, directory: directory.isEmpty ? "/" : directory)
            }
            logger.info("save: made \(what) anew (\(options.arguments.joined(separator: " "))): \(rebuilt[partition.number]?.sizeBytes ?? 0) bytes in \(started.duration(to: .now))")
        }
        return rebuilt
    }

    /// The rebuilt filesystems written over their partitions of the output (`partitions`: as the output's
    /// table has them, grown where they had to).
    static func writeRebuilt(_ rebuilt: [Int: ReadOnlyRebuild], partitions: [Partition], into fd: Int32) throws(SandboxError) {
        for partition in partitions {
            guard let filesystem = rebuilt[partition.number] else { continue }
            try step("write the new \(filesystem.options.type.rawValue) over partition \(partition.number)") {
                try filesystem.write(into: fd, partition: partition)
            }
        }
    }
}
