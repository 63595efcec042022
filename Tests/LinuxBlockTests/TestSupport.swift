import Glibc
import Testing
@testable import LinuxBlock

/// Gates and scratch space shared by the tests.
enum TestSupport {
    static var isRoot: Bool { geteuid() == 0 }
    static var canLoop: Bool { isRoot && access("/dev/loop-control", F_OK) == 0 }
    static var canZram: Bool { isRoot && Zram().isAvailable }

    /// A fresh directory under $TMPDIR (or /tmp); remove it with `removeTree`.
    static func makeTemporaryDirectory() -> String {
        let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array("\(base)/linuxblock-test-XXXXXX".utf8CString)
        guard let result = mkdtemp(&template) else { fatalError("mkdtemp failed: errno \(errno)") }
        return String(cString: result)
    }

    static func removeTree(_ path: String) {
        _ = try? Command.run(["rm", "-rf", "--one-file-system", path])
    }

    /// Creates (or truncates) a file of `size` bytes.
    static func makeFile(_ path: String, size: Int64) throws {
        let fd = try systemCall("open", path) { open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
        defer { close(fd) }
        try systemCall("ftruncate", path) { ftruncate(fd, off_t(size)) }
    }

    static func writeText(_ path: String, _ text: String) throws {
        let fd = try systemCall("open", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        defer { close(fd) }
        var bytes = Array(text.utf8)
        try systemCall("write", path) { bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) } }
    }

    static func readText(_ path: String) throws -> String { try FileIO.readText(path) }

    /// Waits until udev has handled every queued event (where udev runs): udev opens new block devices to
    /// probe them, and an autoclear loop detaches only when its last opener, possibly udev, closes it.
    static func settleUdev() {
        guard access("/run/udev/control", F_OK) == 0 else { return }
        _ = try? Command.run(["udevadm", "settle"])
    }

    /// The backing files of currently attached loop devices (sysfs only: opening devices would delay detaches).
    static func attachedBackingFiles() -> [String] { LoopDevice.attached(readingLabels: false).map(\.backingFile) }
}

/// Tests on real kernel objects run one at a time: reading a loop label opens the device, which would delay
/// another test's autoclear detach and make its "nothing left behind" check race.
@Suite(.serialized) struct RootTests {}
