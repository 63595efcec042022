import Foundation
import Glibc
import Synchronization
import Testing
@testable import SandboxFS

/// Whether FUSE over io_uring can be used here: this libfuse has it and the kernel has the parameter
/// (serve, and the filesystem these tests mount, turn it on as root).
let canUseFuseUring = canMountFuse && SandboxFileSystem.libfuseHasUring && access("/sys/module/fuse/parameters/enable_uring", F_OK) == 0

/// A sandbox's mkdir takes seconds (an image's preparation, device setup): it must not hold up other
/// requests. Over io_uring libfuse runs each CPU queue's handlers on one thread; one worker over /dev/fuse
/// is the same situation on any kernel.
extension SandboxFSTests {
    @Test func statfsIsAnsweredWhileASandboxMkdirWaitsForItsPreparation() throws {
        var options = FileSystemOptions()
        options.ioUring = false
        options.maxThreads = 1
        options.maxIdleThreads = 1
        try statfsDuringAHeldMkdir(options, onCPU: nil)
    }

    /// The same over io_uring, with both callers on CPU 0: their requests go to that CPU's queue.
    @Test(.enabled(if: canUseFuseUring, "needs libfuse with io_uring and CONFIG_FUSE_IO_URING"))
    func statfsIsAnsweredWhileASandboxMkdirWaitsOverIoUring() throws {
        try statfsDuringAHeldMkdir(FileSystemOptions(), onCPU: 0)
    }

    private func statfsDuringAHeldMkdir(_ options: FileSystemOptions, onCPU cpu: Int?) throws {
        let m = try MountedFS(options: options)
        defer { m.stop() }
        let preparing = DispatchSemaphore(value: 0), prepared = DispatchSemaphore(value: 0)
        m.provider.setBeforeCreate {
            preparing.signal()
            prepared.wait()
        }
        let released = Flag()
        // Released also when an expectation fails: stop() waits for the mkdir.
        defer { if !released.isSet { prepared.signal() } }
        let mkdirResult = Mutex<Int32?>(nil)
        let mkdirDone = DispatchSemaphore(value: 0)
        let sandbox = m.path("alpha/sandboxes/s")
        Self.startThread(onCPU: cpu) {
            let rc = mkdir(sandbox, 0o755)
            mkdirResult.withLock { $0 = rc == 0 ? 0 : errno }
            mkdirDone.signal()
        }
        try #require(preparing.wait(timeout: .now() + 30) == .success, "the mkdir never reached the provider")
        let statfsDone = DispatchSemaphore(value: 0)
        let mountpoint = m.mountpoint
        Self.startThread(onCPU: cpu) {
            var buffer = statvfs()
            _ = statvfs(mountpoint, &buffer)
            statfsDone.signal()
        }
        // On a free worker a statfs takes well under a millisecond; 10 s is only the bound of a failure.
        #expect(statfsDone.wait(timeout: .now() + 10) == .success, "statfs waited for the sandbox's mkdir")
        released.set()
        prepared.signal()
        try #require(mkdirDone.wait(timeout: .now() + 30) == .success, "the mkdir never returned")
        #expect(mkdirResult.withLock { $0 } == 0)
        // The mkdir's reply came from another thread, which has ended since. Over io_uring the ring entry it
        // sent that reply on must still take this CPU's next requests (not cancel them: ECANCELED).
        let failures = Mutex<[String]>([])
        let checked = DispatchSemaphore(value: 0)
        Self.startThread(onCPU: cpu) {
            for round in 0..<20 {
                var buffer = statvfs(), st = stat()
                if statvfs(mountpoint, &buffer) != 0 { failures.withLock { $0.append("statfs \(round): errno \(errno)") } }
                if lstat(sandbox, &st) != 0 || (st.st_mode & S_IFMT) != S_IFDIR {
                    failures.withLock { $0.append("lstat \(round): errno \(errno)") }
                }
            }
            checked.signal()
        }
        try #require(checked.wait(timeout: .now() + 30) == .success, "requests after the mkdir never returned")
        #expect(failures.withLock { $0 } == [])
    }

    static func startThread(onCPU cpu: Int?, _ body: @escaping @Sendable () -> Void) {
        Thread {
            if let cpu {
                // sched_setaffinity is a _GNU_SOURCE call Glibc's module does not declare.
                typealias SetAffinity = @convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32
                let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_setaffinity")
                var set = cpu_set_t()
                withUnsafeMutableBytes(of: &set) { $0[cpu / 8] |= UInt8(1 << (cpu % 8)) }
                let pinned = symbol.map { unsafeBitCast($0, to: SetAffinity.self)(0, MemoryLayout<cpu_set_t>.size, &set) }
                #expect(pinned == 0, "cannot pin the thread to CPU \(cpu)")
            }
            body()
        }.start()
    }
}
