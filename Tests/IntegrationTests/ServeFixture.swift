import Foundation
import Glibc
import TestSupport
import Testing

/// Where the package lives, and the imgsandbox binary `swift build` made next to the test bundle.
enum Paths {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let makeTestImage = packageRoot + "/Tools/make-test-image"
    static var binary: String {
        if let override = ProcessInfo.processInfo.environment["IMGSANDBOX_BIN"] { return override }
        let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var candidate = bundleDirectory
        while candidate.path != "/" {
            let path = candidate.appendingPathComponent("imgsandbox").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
            candidate = candidate.deletingLastPathComponent()
        }
        return packageRoot + "/.build/debug/imgsandbox"
    }
}

enum Environment {
    /// The engine the suite runs against: overlay natively; Tools/vm-test sets dm inside the VM.
    static let engine = ProcessInfo.processInfo.environment["IMGSANDBOX_TEST_ENGINE"] ?? "overlay"

    static var canServe: Bool {
        geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0 && access("/dev/loop-control", W_OK) == 0
            && FileManager.default.isExecutableFile(atPath: Paths.binary)
    }

    /// Whether the binary under test links libfuse 3.17+ (tmpfile operation, passthrough API), as its
    /// `doctor` says ("has no passthrough API" otherwise).
    static let libfuseHas317: Bool = {
        guard let doctor = try? run([Paths.binary, "doctor"], allowFailure: true) else { return false }
        return doctor.output.contains("data path:") && !doctor.output.contains("has no passthrough API")
    }()

    static var skipReason: Comment {
        "integration suite needs root, /dev/fuse, /dev/loop-control and a built imgsandbox (\(Paths.binary)); skipped"
    }
}

/// Runs a program (stdout and stderr together); throws CommandFailed when it fails, unless allowed.
@discardableResult
func run(_ argv: [String], allowFailure: Bool = false) throws -> (status: Int32, output: String) {
    let result = Subprocess.run(argv)
    if !allowFailure, result.status != 0 {
        throw CommandFailed(argv: argv, status: result.status, output: result.output)
    }
    return result
}

struct CommandFailed: Error, CustomStringConvertible {
    let argv: [String], status: Int32, output: String
    var description: String { "\(argv.joined(separator: " ")) exited \(status): \(output)" }
}

/// A serve daemon in the foreground on images made by Tools/make-test-image, in a temp folder.
/// `close()` stops it (if running) and checks that nothing is left behind; tests call it in `defer`.
// @unchecked: one test thread drives it; only the log lines are shared (with the reader thread), behind logLock.
final class ServeFixture: @unchecked Sendable {
    let work: String
    let images: String
    let mountpoint: String
    private var process: Process?
    /// With `start(reaped: false)`: serve's pid; `process` is then its parent, a shell that never waits.
    private var unreaped: Int32?
    /// With `start(wrapper:)`: serve's pid; `process` is the wrapper (unshare), which waits for it.
    private var wrapped: Int32?
    /// Parents keeping killed daemons as zombies, ended by close(), and those daemons' pids.
    private var zombieKeepers: [Process] = []
    private var zombies: [Int32] = []
    /// Guards logLines; signalled whenever a line arrives.
    private let logLock = NSCondition()
    private var logLines: [String] = []
    /// Daemons started by this fixture, and those whose log has ended (guarded by logLock).
    private var runs = 0
    private var endedRuns: Set<Int> = []
    /// Image path -> its fingerprint when made: close() expects it unchanged.
    var checksums: [String: String] = [:]
    /// Every daemon this fixture started (the residue check judges each one's objects).
    private var instances: [Int32] = []

    init(images specs: [(name: String, kind: String, extra: [String])]) throws {
        let base = ProcessInfo.processInfo.environment["IMGSANDBOX_TEST_WORK"] ?? NSTemporaryDirectory()
        work = URL(fileURLWithPath: base).appendingPathComponent("imgsandbox-it-\(UUID().uuidString.prefix(8))").path
        images = work + "/images"
        mountpoint = work + "/mnt"
        try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        for spec in specs {
            try makeImage(spec.name, kind: spec.kind, extra: spec.extra)
        }
    }

    func makeImage(_ name: String, kind: String, extra: [String] = []) throws {
        let path = "\(images)/\(name).img"
        // Under emulation (Tools/vm-test) mkfs is slow: the host prebuilds default images of each kind.
        // They are only ever read, so a symlink to one serves as the image. Hashing one costs seconds
        // there: Tools/vm-test checks them on the host, before and after the boot.
        if extra.isEmpty, let cache = ProcessInfo.processInfo.environment["IMGSANDBOX_TEST_IMAGE_CACHE"],
           FileManager.default.fileExists(atPath: "\(cache)/\(kind).img") {
            try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: "\(cache)/\(kind).img")
            return
        }
        try run([Paths.makeTestImage, kind, path] + extra)
        checksums[path] = try fingerprint(path)
    }

    func removeImage(_ name: String) throws {
        let path = "\(images)/\(name).img"
        try FileManager.default.removeItem(atPath: path)
        checksums[path] = nil
    }

    /// Builds a new image outside IMAGES_DIR and renames it over NAME.img, as an admin replacing it would.
    func replaceImage(_ name: String, kind: String, extra: [String] = []) throws {
        let path = "\(images)/\(name).img", staged = "\(work)/staged-\(name).img"
        try run([Paths.makeTestImage, kind, staged] + extra)
        let checksum = try fingerprint(staged)
        guard rename(staged, path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        checksums[path] = checksum
    }

    func sha256(_ path: String) throws -> String {
        String(try run(["sha256sum", path]).output.prefix(64))
    }

    /// What `close()` compares to prove an image unchanged: size and mtime (every write moves it, the
    /// loop device's included) and the CRC-32 of the content, which `cksum` computes with the CPU's
    /// carry-less multiply: 0.09 s for a 256 MiB image against 3.2 s for sha256sum (measured under load),
    /// paid twice per image of every test. A CRC is no defence against a forger, but nothing forges here:
    /// it catches the daemon writing to an image. A link to an image of the VM's shared cache gets size and
    /// mtime only: under emulation a CRC of it costs seconds, and Tools/vm-test hashes the whole cache on the
    /// host before and after the boot (once per boot, not per test).
    func fingerprint(_ path: String) throws -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let sizeAndTime = "size \(st.st_size) mtime \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        if let cache = ProcessInfo.processInfo.environment["IMGSANDBOX_TEST_IMAGE_CACHE"],
           let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path), target.hasPrefix(cache + "/") {
            return sizeAndTime + " (content: Tools/vm-test's hash of \(target))"
        }
        let crc = try run(["cksum", path]).output.split(separator: " ").prefix(2).joined(separator: " ")
        return sizeAndTime + " cksum \(crc)"
    }

    var log: [String] { logLock.withLock { logLines } }

    /// The daemon writes a failure's log line before it answers, but the line reaches us through a pipe
    /// read by another thread: wait (bounded) until a line matching `predicate` has arrived.
    func waitForLog(timeout: TimeInterval = 10, _ predicate: (String) -> Bool) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        logLock.lock()
        defer { logLock.unlock() }
        while !logLines.contains(where: predicate) {
            if !logLock.wait(until: deadline) { return logLines.contains(where: predicate) }
        }
        return true
    }

    /// Starts `serve --foreground` and returns once it logs that it is serving. `reaped: false` gives serve
    /// a parent that never reaps it (like a busy init): killed, it stays a zombie (see killLeavingZombie).
    /// `wrapper` runs serve under another command (`unshare -p -f --mount-proc`), which must wait for it.
    func start(_ extraArguments: [String] = [], environment: [String: String] = [:], reaped: Bool = true,
               wrapper: [String] = []) throws {
        let process = Process()
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let serve = ["serve", "--foreground", "--engine", Environment.engine, "--cow-size", "256M"]
            + extraArguments + [images, mountpoint]
        if !wrapper.isEmpty {
            process.executableURL = URL(fileURLWithPath: wrapper[0])
            process.arguments = Array(wrapper.dropFirst()) + [Paths.binary] + serve
        } else if reaped {
            process.executableURL = URL(fileURLWithPath: Paths.binary)
            process.arguments = serve
        } else {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "\"$@\" & exec sleep 3600", "sh", Paths.binary] + serve
        }
        unreaped = nil
        wrapped = nil
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        try process.run()
        self.process = process
        instances.append(process.processIdentifier)
        // A fixture may start a daemon again (after a kill): only this daemon's lines and end count here.
        let (run, firstLine) = logLock.withLock { () -> (Int, Int) in
            runs += 1
            return (runs, logLines.count)
        }
        let reader = pipe.fileHandleForReading
        // One thread drains the daemon's log for its whole life, waking waiters at every line and at the end.
        let thread = Thread { [self] in
            var pending = Data()
            while true {
                let chunk = reader.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: 10) {
                    let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                    pending.removeSubrange(pending.startIndex...newline)
                    logLock.withLock {
                        logLines.append(line)
                        logLock.broadcast()
                    }
                }
            }
            logLock.withLock {
                endedRuns.insert(run)
                logLock.broadcast()
            }
        }
        thread.start()
        let deadline = Date(timeIntervalSinceNow: 120)
        let ready = logLock.withLock { () -> Bool in
            while true {
                if logLines[firstLine...].contains(where: { $0.contains("serving ") }) { return true }
                if endedRuns.contains(run) || !logLock.wait(until: deadline) { return false }
            }
        }
        guard ready else {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            process.waitUntilExit()
            throw CommandFailed(argv: ["serve"], status: process.terminationStatus, output: log[firstLine...].joined(separator: "\n"))
        }
        if !reaped || !wrapper.isEmpty {
            let parent = process.processIdentifier
            let children = (try? String(contentsOfFile: "/proc/\(parent)/task/\(parent)/children", encoding: .utf8)) ?? ""
            let child = children.split(separator: " ").compactMap { Int32($0) }.first
            if child == nil { kill(parent, SIGKILL) }
            let found = try #require(child, "serve under \(wrapper.first ?? "a non-reaping parent"): no child of \(parent)")
            if wrapper.isEmpty { unreaped = found; instances.append(found) } else { wrapped = found }
        }
    }

    var pid: Int32? { unreaped ?? wrapped ?? process?.processIdentifier }

    /// SIGKILLs a daemon started with `reaped: false` and returns its pid once it is a zombie; its parent
    /// keeps it so until close().
    func killLeavingZombie() throws -> Int32 {
        let serve = try #require(unreaped)
        let keeper = try #require(process)
        kill(serve, SIGKILL)
        zombieKeepers.append(keeper)
        zombies.append(serve)
        self.process = nil
        unreaped = nil
        _ = Self.poll(seconds: 30) { Self.processState(serve) == "Z" }
        return serve
    }

    /// A process that is not our child cannot be waited for: poll its state, bounded. True if `condition` held.
    static func poll(seconds: Int, _ condition: () -> Bool) -> Bool {
        for _ in 0..<(seconds * 100) {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    /// Field 3 of /proc/PID/stat (R, S, Z ...), nil when there is no such process.
    static func processState(_ pid: Int32) -> Character? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ").first?.first
    }

    /// Stops the daemon the way a user would and returns its exit status.
    @discardableResult
    func stop(with signal: Int32 = SIGTERM) -> Int32? {
        guard let process, process.isRunning else { return process?.terminationStatus }
        kill(wrapped ?? process.processIdentifier, signal)
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Waits for the daemon to end by itself (after a signal the test sent) and returns its exit status.
    func waitForExit() -> Int32? {
        process?.waitUntilExit()
        return process?.terminationStatus
    }

    /// Ends the daemon (if a test left it running), force-cleans as a last resort, then checks residue and
    /// that no image changed.
    func close() {
        if let unreaped, process?.isRunning == true {
            kill(unreaped, SIGTERM)
            _ = Self.poll(seconds: 120) { [nil, "Z"].contains(Self.processState(unreaped)) }
        }
        if wrapped != nil, process?.isRunning == true { stop() }
        if let process, process.isRunning {
            kill(process.processIdentifier, unreaped == nil ? SIGTERM : SIGKILL)
            process.waitUntilExit()
        }
        // Their zombies go to init, which reaps them.
        for keeper in zombieKeepers where keeper.isRunning {
            kill(keeper.processIdentifier, SIGKILL)
            keeper.waitUntilExit()
        }
        for instance in instances where !zombies.contains(instance) {
            let residue = Residue.find(work: work, instance: instance)
            #expect(residue.isEmpty, "left behind by instance \(instance): \(residue)")
            if !residue.isEmpty { Residue.forceClean(work: work, instance: instance) }
        }
        if instances.isEmpty {
            let residue = Residue.find(work: work, instance: nil)
            #expect(residue.isEmpty, "left behind: \(residue)")
            if !residue.isEmpty { Residue.forceClean(work: work, instance: nil) }
        }
        for zombie in zombies {
            let left = Residue.find(work: work, instance: zombie)
            #expect(left.isEmpty, "left behind by killed instance \(zombie): \(left)")
            if !left.isEmpty { Residue.forceClean(work: work, instance: zombie) }
        }
        for (path, checksum) in checksums {
            #expect((try? fingerprint(path)) == checksum, "image \(path) changed")
        }
        try? FileManager.default.removeItem(atPath: work)
    }

    func sandbox(_ image: String, _ name: String) -> String { "\(mountpoint)/\(image)/sandboxes/\(name)" }

    func status() throws -> [[String: Any]] {
        let output = try run([Paths.binary, "status", "--json", mountpoint]).output
        let document = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
        return document?["sandboxes"] as? [[String: Any]] ?? []
    }
}
