import Foundation
import Glibc
import Testing

/// Fedora's layout (issue 25 item 5): a btrfs whose top level holds the subvolumes root and home, mounted by
/// fstab with subvol=root at / and subvol=home at /home; an ext4 /boot whose loader entry names the root.
@Suite(.serialized, .enabled(if: Environment.canServe && Environment.hasBtrfs, "needs root, FUSE, btrfs and btrfs-progs"))
struct BtrfsSuite {
    static let rootReason = "partition 3 (btrfs subvol=/root): root=UUID=5f2c0d1e-9b1a-4c3e-8f7d-0123456789ab in "
        + "loader/entries/0123456789abcdef0123456789abcdef-6.5.6-300.fc39.aarch64.conf of partition 2"

    @Test func subvolumesAreWhatFstabMounts() throws {
        let fixture = try ServeFixture(images: [("fedora", "fedora-like", [])])
        defer { fixture.close() }
        try fixture.start()
        let one = fixture.sandbox("fedora", "one"), two = fixture.sandbox("fedora", "two")
        #expect(mkdir(one, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        // The root subvolume at /, not the top level (which holds only root/ and home/).
        #expect(FileChecks.readFile("\(one)/etc/hostname") == "fedora-like\n")
        #expect(FileChecks.stat("\(one)/root/etc") == nil)
        #expect(FileChecks.readFile("\(one)/home/pi/where.txt") == "in the home subvolume\n")
        #expect(FileChecks.readFile("\(one)/boot/vmlinuz-6.5.6-300.fc39.aarch64") == "kernel\n")
        #expect(FileChecks.stat("\(one)/boot/efi/EFI/fedora/grub.cfg") != nil)
        let status = try fixture.status()
        #expect(status.first?["root"] as? String == Self.rootReason)
        #expect(fixture.waitForLog { $0.contains("image fedora: root is " + Self.rootReason) })
        // /home is a second mount of the same btrfs: it shares the root's COW store.
        let parts = status.first?["partitions"] as? [[String: Any]] ?? []
        let home = parts.first { $0["mount_point"] as? String == "/home" }
        #expect(home?["filesystem"] as? String == "btrfs")
        #expect(home?["cow_total_bytes"] as? Int == status.first?["cow_total_bytes"] as? Int)

        try FileChecks.writeFile("\(one)/home/pi/new.txt", "written in /home")
        try FileChecks.writeFile("\(one)/etc/added", "written in /")
        // A second sandbox of the same btrfs: its own copy, none of the first one's writes.
        #expect(mkdir(two, 0o755) == 0, "mkdir two: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(two)/home/pi/where.txt") == "in the home subvolume\n")
        #expect(FileChecks.stat("\(two)/home/pi/new.txt") == nil)
        #expect(FileChecks.stat("\(two)/etc/added") == nil)
        // pristine/ while both sandboxes live (a third mount of the fsid).
        let pristine = "\(fixture.mountpoint)/fedora/pristine"
        #expect(FileChecks.readFile("\(pristine)/etc/hostname") == "fedora-like\n")
        #expect(FileChecks.readFile("\(pristine)/home/pi/where.txt") == "in the home subvolume\n")
        #expect(FileChecks.stat("\(pristine)/home/pi/new.txt") == nil)

        let diff = try ChangeFixture.diff(one)
        #expect(diff.status == 0, "\(diff.output)")
        #expect(diff.output.contains("added /etc/added"), "\(diff.output)")
        #expect(diff.output.contains("added /home/pi/new.txt"), "\(diff.output)")

        // save: each subvolume's changes go into that subvolume of the output.
        let output = "\(fixture.work)/saved.img"
        let saved = try run([Paths.binary, "save", "--quiet", one, output], allowFailure: true)
        #expect(saved.status == 0, "\(saved.output)")
        #expect(rmdir(one) == 0)
        #expect(rmdir(two) == 0)
        #expect(fixture.stop() == 0)
        if saved.status == 0 { try Self.checkSaved(output) }
    }

    /// The output's btrfs passes `btrfs check`, and each change is in its subvolume (read by the kernel).
    /// rootflags=subvolid=256 in the loader entry is what picks the root subvolume: fstab's `/` names none and
    /// the default subvolume is the top level.
    @Test func subvolidOnTheKernelCommandLine() throws {
        let fixture = try ServeFixture(images: [("fedora", "fedora-subvolid", [])])
        defer { fixture.close() }
        try fixture.start()
        let one = fixture.sandbox("fedora", "one")
        #expect(mkdir(one, 0o755) == 0, "mkdir: \(String(cString: strerror(errno)))")
        #expect(FileChecks.readFile("\(one)/etc/hostname") == "fedora-like\n")
        #expect(FileChecks.stat("\(one)/root/etc") == nil)
        #expect(FileChecks.readFile("\(one)/home/pi/where.txt") == "in the home subvolume\n")
        let status = try fixture.status()
        #expect((status.first?["root"] as? String)?.hasPrefix("partition 3 (btrfs subvolid=256): root=UUID=") == true,
                "\(status.first?["root"] ?? "-")")
        try FileChecks.writeFile("\(one)/etc/added", "written in /")
        let diff = try ChangeFixture.diff(one)
        #expect(diff.status == 0 && diff.output.contains("added /etc/added"), "\(diff.output)")
        #expect(FileChecks.stat("\(fixture.mountpoint)/fedora/pristine/etc/added") == nil)
        #expect(rmdir(one) == 0)
        #expect(fixture.stop() == 0)
    }

    static func checkSaved(_ image: String) throws {
        let start = 198656 * 512
        let size = try run(["sfdisk", "-q", "-J", image]).output
        #expect(size.contains("\"start\": 198656"), "partition 3 moved: \(size)")
        let loop = try run(["losetup", "-f", "--show", "-r", "-o", "\(start)", image]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? run(["losetup", "-d", loop], allowFailure: true) }
        let check = try run(["btrfs", "check", "--readonly", loop], allowFailure: true)
        #expect(check.status == 0, "btrfs check: \(check.output)")
        // The image's fsid, which its fstab and loader entry name (save mounts its copy under a temporary one).
        let superblock = try run(["btrfs", "inspect-internal", "dump-super", loop]).output
        #expect(superblock.contains("\nfsid\t\t\t5f2c0d1e-9b1a-4c3e-8f7d-0123456789ab\n"), "\(superblock.prefix(300))")
        #expect(!superblock.contains("METADATA_UUID"), "no metadata_uuid left behind")
        let script = """
            set -e; m=$(mktemp -d); mount -o ro,subvol=root "$1" "$m"; cat "$m/etc/added"; echo; umount "$m"
            mount -o ro,subvol=home "$1" "$m"; cat "$m/pi/new.txt"; echo; umount "$m"
            mount -o ro "$1" "$m"; ls "$m"; umount "$m"; rmdir "$m"
            """
        let seen = try run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", loop], allowFailure: true)
        #expect(seen.output == "written in /\nwritten in /home\nhome\nroot\n", "\(seen.output)")
    }
}

extension Environment {
    static var hasBtrfs: Bool {
        let filesystems = (try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8)) ?? ""
        return filesystems.contains("\tbtrfs\n") && (access("/bin/btrfs", X_OK) == 0 || access("/sbin/btrfs", X_OK) == 0)
    }
}
