import Foundation
import Glibc
import Testing

/// Changes of every kind made in a sandbox of a `rpi` test image, and the diff lines they must give.
enum ChangeFixture {
    /// Sorted as diff sorts (by path bytes).
    static let expectedDiff = [
        "modified times /",
        "deleted /boot/firmware/cmdline.txt",
        "modified content,times /boot/firmware/config.txt",
        "added /boot/firmware/ssh",
        "modified owner,times /etc/fstab",
        "modified content,links,times /etc/hostname",
        "modified times /home/pi",
        "modified type /home/pi/absolute-link",
        "modified link_target,times /home/pi/readme-link",
        "deleted /home/pi/readme.txt",
        "modified mode,xattrs /usr/bin/hello",
        "added /work",
        "added /work/fifo",
        "added /work/hard",
        "added /work/hostname-hard",
        "added /work/link",
        "added /work/new.txt",
        "added /work/null",
        "added /work/sparse",
    ]

    static let sparseSize: off_t = 5 << 30
    static let sparseMarks: [off_t] = [0, (4 << 30) + (512 << 20)]

    static func make(in root: String) throws {
        // The boot partition (FAT, served by the daemon at /boot/firmware).
        var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000_000, tv_nsec: 0)]
        try FileChecks.writeFile("\(root)/boot/firmware/config.txt", "arm_64bit=1\ndtoverlay=saved\n")
        // FAT keeps mtimes in 2 s steps: an edit within 2 s of making the image would keep its time.
        #expect(utimensat(AT_FDCWD, "\(root)/boot/firmware/config.txt", &times, 0) == 0)
        #expect(unlink("\(root)/boot/firmware/cmdline.txt") == 0)
        try FileChecks.writeFile("\(root)/boot/firmware/ssh", "")
        try FileChecks.writeFile("\(root)/etc/hostname", "saved-box\n")
        #expect(chown("\(root)/etc/fstab", 1000, 1000) == 0)
        #expect(utimensat(AT_FDCWD, "\(root)/etc/fstab", &times, 0) == 0)
        #expect(unlink("\(root)/home/pi/readme.txt") == 0, "deleting a file of the image")
        #expect(unlink("\(root)/home/pi/readme-link") == 0 && symlink("elsewhere", "\(root)/home/pi/readme-link") == 0)
        #expect(unlink("\(root)/home/pi/absolute-link") == 0 && mkdir("\(root)/home/pi/absolute-link", 0o755) == 0)
        #expect(chmod("\(root)/usr/bin/hello", 0o700) == 0)
        try run(["setcap", "cap_net_raw+ep", "\(root)/usr/bin/hello"])
        #expect(mkdir("\(root)/work", 0o755) == 0)
        try FileChecks.writeFile("\(root)/work/new.txt", "new file\n")
        try run(["setfattr", "-n", "user.note", "-v", "kept", "\(root)/work/new.txt"])
        try run(["setfacl", "-m", "u:1000:r", "\(root)/work/new.txt"])
        #expect(link("\(root)/work/new.txt", "\(root)/work/hard") == 0)
        #expect(link("\(root)/etc/hostname", "\(root)/work/hostname-hard") == 0, "a new hard link to an image file")
        #expect(mkfifo("\(root)/work/fifo", 0o640) == 0)
        #expect(mknod("\(root)/work/null", S_IFCHR | 0o666, makedev(1, 3)) == 0)
        #expect(symlink("new.txt", "\(root)/work/link") == 0)
        let fd = open("\(root)/work/sparse", O_CREAT | O_WRONLY, 0o644)
        #expect(fd >= 0)
        for mark in sparseMarks { #expect(pwrite(fd, "mark@\(mark)", 16, mark) == 16) }
        #expect(ftruncate(fd, sparseSize) == 0)
        close(fd)
    }

    /// The diff lines of `imgsandbox diff SANDBOX`.
    static func diff(_ sandbox: String, json: Bool = false) throws -> (status: Int32, output: String) {
        try run([Paths.binary, "diff"] + (json ? ["--json"] : []) + [sandbox], allowFailure: true)
    }

    /// A fresh sandbox's diff is empty; after `make` it lists exactly `expectedDiff`.
    static func makeAndExpectExactDiff(in sandbox: String) throws {
        let fresh = try diff(sandbox)
        #expect(fresh.status == 0 && fresh.output.isEmpty, "a fresh sandbox has no changes: \(fresh.output)")
        try make(in: sandbox)
        let text = try diff(sandbox)
        #expect(text.status == 0)
        #expect(text.output.split(separator: "\n").map(String.init) == expectedDiff)
    }

    static func makedev(_ major: UInt32, _ minor: UInt32) -> dev_t {
        dev_t((UInt64(major) << 8) | UInt64(minor))
    }
}
