import Foundation
import Glibc
import Synchronization
import TestSupport
import Testing
@testable import SandboxFS

/// rmdir of a sandbox against RELEASE, which the kernel sends after close(2) has returned.
extension SandboxFSTests {
    /// A flag set once from any thread.
    final class Flag: Sendable {
        private let value = Mutex(false)
        func set() { value.withLock { $0 = true } }
        var isSet: Bool { value.withLock { $0 } }
    }

    /// What a hook does, set by the test after the filesystem (which takes its hooks at init) is up.
    final class HookAction: Sendable {
        private let action = Mutex<(@Sendable () -> Void)?>(nil)
        func set(_ body: @escaping @Sendable () -> Void) { action.withLock { $0 = body } }
        func run() { action.withLock { $0 }?() }
    }

    /// The RELEASE of a closed file arrives while a request still uses its fd (a read whose reply the kernel
    /// already has). rmdir must wait until that fd is closed: the provider unmounts without MNT_DETACH, so
    /// an fd left open there turns rmdir into EBUSY. The hooks order the events; nothing sleeps.
    @Test func rmdirWaitsForTheFdOfAReleasedFileToClose() throws {
        let onHandleRemoved = HookAction(), onRmdirWaits = HookAction()
        var hooks = TestHooks()
        hooks.handleRemoved = { _ in onHandleRemoved.run() }
        hooks.rmdirWaits = { onRmdirWaits.run() }
        let m = try MountedFS(backing: .overlay(nfsExport: true), hooks: hooks)
        defer { m.stop() }
        try #require(mkdir(m.path("alpha/sandboxes/s"), 0o755) == 0)
        let s = m.path("alpha/sandboxes/s")
        let ref = try #require(m.provider.sandbox(image: "alpha", name: "s"))
        try "data".write(toFile: s + "/f", atomically: false, encoding: .utf8)
        let fd = open(s + "/f", O_RDONLY)
        try #require(fd >= 0)
        let files = m.fs.registry.files(in: ref.serial)
        try #require(files.count == 1)
        let lease = files[0].lease
        // Hold the fd as a request in flight would.
        try #require(lease.acquire() != nil)
        let released = Flag()
        defer { if !released.isSet { lease.release() } }
        let removed = DispatchSemaphore(value: 0)
        onHandleRemoved.set { removed.signal() }
        onRmdirWaits.set {
            released.set()
            lease.release() // the request in flight ends while rmdir waits
        }
        // close(2) and rmdir from one CPU: over io_uring the RELEASE and the RMDIR go to that CPU's queue, whose
        // one thread runs them in turn; a RELEASE that waited there for the fd held the rmdir up behind it.
        let outcome = Mutex("not run")
        let done = DispatchSemaphore(value: 0)
        Self.startThread(onCPU: 0) {
            defer { done.signal() }
            close(fd)
            // The daemon has the RELEASE (the handle is gone from its table) before rmdir is sent.
            guard removed.wait(timeout: .now() + 30) == .success else {
                outcome.withLock { $0 = "no RELEASE after close(2)" }
                return
            }
            let code = errnoOf(rmdir(s))
            outcome.withLock { $0 = code == 0 ? "removed" : "rmdir: errno \(code)" }
        }
        // rmdir returns as soon as the fd is let go; 40 s is only the bound of a failure.
        if done.wait(timeout: .now() + 40) == .timedOut {
            Issue.record("rmdir never reached its wait: held up behind the RELEASE")
            released.set()
            lease.release()
            done.wait()
        }
        #expect(outcome.withLock { $0 } == "removed")
        #expect(released.isSet, "rmdir did not wait for the released file's fd")
        #expect(!MountedFS.isMounted(ref.mountPath))
        #expect(m.provider.sandboxNames(image: "alpha") == [])
    }

    /// close(2) or closedir(3) then rmdir at once succeeds (the RELEASE is waited for); a file really open
    /// gets EBUSY after the bounded wait, and nothing changes.
    @Test func rmdirAfterCloseSucceedsAndAnOpenFileGetsEBUSY() throws {
        var options = FileSystemOptions()
        options.releaseWait = 0.5
        let m = try MountedFS(options: options, backing: .overlay(nfsExport: true))
        defer { m.stop() }
        for round in 0..<20 {
            let s = m.path("alpha/sandboxes/r\(round)")
            try #require(mkdir(s, 0o755) == 0)
            try #require(mkdir(s + "/d", 0o755) == 0)
            let fd = open(s + "/f", O_CREAT | O_RDWR, 0o644)
            try #require(fd >= 0)
            #expect(write(fd, "abc", 3) == 3)
            let dir = opendir(s + "/d")
            #expect(dir != nil)
            if round == 0 {
                let start = DispatchTime.now()
                #expect(errnoOf(rmdir(s)) == EBUSY)
                let waited = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
                #expect(waited >= 0.5, "EBUSY after \(waited) s, before the release wait ended")
                #expect(readAll(s + "/f") == "abc")
            }
            if let dir { closedir(dir) }
            close(fd)
            #expect(errnoOf(rmdir(s)) == 0, "round \(round)")
        }
        #expect(m.provider.sandboxNames(image: "alpha") == [])
    }
}
