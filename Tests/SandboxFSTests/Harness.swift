import Foundation
import Glibc
import Logging
import Sandbox
import TestSupport
@testable import SandboxFS

/// Root and /dev/fuse: the only way these tests can run.
let canMountFuse = geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0

struct HarnessError: Error, CustomStringConvertible {
    let description: String
}

/// A SandboxFileSystem mounted at a temp dir and served on a background thread, over a FakeProvider
/// whose sandboxes live in another temp dir. `stop()` unmounts and removes everything; call it in defer.
final class MountedFS: @unchecked Sendable {
    let root: String
    let mountpoint: String
    let backing: String
    let provider: FakeProvider
    let fs: SandboxFileSystem
    private let done = DispatchSemaphore(value: 0)
    private(set) var loopResult: Int32 = 0
    private var stopped = false

    init(images: [String] = ["alpha", "beta"], options: FileSystemOptions = FileSystemOptions(),
         backing: FakeProvider.Backing = .directory, journaled: Bool = false, hooks: TestHooks = TestHooks()) throws {
        var template = Array("/tmp/sandboxfs-test-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw HarnessError(description: "mkdtemp: errno \(errno)") }
        root = String(cString: dir)
        mountpoint = root + "/mnt"
        self.backing = root + "/backing"
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: self.backing, withIntermediateDirectories: true)
        provider = FakeProvider(base: self.backing, images: images, backing: backing, journaled: journaled)
        var logger = Logger(label: "sandboxfs-test")
        logger.logLevel = ProcessInfo.processInfo.environment["SANDBOXFS_TEST_DEBUG"] != nil ? .trace : .critical
        fs = SandboxFileSystem(provider: provider, options: options, logger: logger, hooks: hooks)
        do {
            try fs.mount(at: mountpoint)
        } catch {
            try? FileManager.default.removeItem(atPath: root)
            throw error
        }
        let thread = Thread { [fs, done, weak self] in
            let rc = fs.run()
            self?.loopResult = rc
            done.signal()
        }
        thread.start()
    }

    private var loopEnded = false

    /// exit(), then waits until run() has returned.
    func endLoop() {
        guard !loopEnded else { return }
        loopEnded = true
        fs.exit()
        done.wait()
    }

    /// Ends the loop, unmounts, and deletes the temp dirs.
    func stop() {
        guard !stopped else { return }
        stopped = true
        endLoop()
        fs.unmount()
        provider.discardAll()
        // Last resort if the kernel still lists it (a failed test left something open).
        if umount2(mountpoint, Int32(MNT_DETACH)) != 0 { _ = errno }
        try? FileManager.default.removeItem(atPath: root)
    }

    func path(_ relative: String) -> String { mountpoint + "/" + relative }

    static func isMounted(_ path: String) -> Bool {
        (readAll("/proc/self/mounts") ?? "").split(separator: "\n").contains { $0.split(separator: " ").dropFirst().first.map(String.init) == path }
    }

    /// fds of this process whose target lies under `path` (the daemon's fds inside a backing directory).
    static func fdsPointing(into path: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { fd in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)).map { $0 == path || $0.hasPrefix(path + "/") } ?? false
        }.count
    }

    /// Number of fds this (test + daemon) process holds.
    static func openFDCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }
}


/// Runs a command and returns (status, stdout).
func run(_ arguments: [String]) throws -> (Int32, String) {
    let result = Subprocess.run(arguments, output: .stdoutOnly)
    return (result.status, result.output)
}

func readAll(_ path: String) -> String? {
    FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
}

func lstatOf(_ path: String) -> stat? {
    var st = stat()
    return lstat(path, &st) == 0 ? st : nil
}
