import Dispatch
import Glibc
import Synchronization
import Testing
@testable import SandboxFS

/// A sandbox's mkdir takes seconds (an image's preparation, device setup): it must not hold up other
/// requests. Over io_uring libfuse runs each CPU queue's handlers on one thread; one worker over /dev/fuse
/// is the same situation, on any kernel.
extension SandboxFSTests {
    @Test func statfsIsAnsweredWhileASandboxMkdirWaitsForItsPreparation() throws {
        var options = FileSystemOptions()
        options.maxThreads = 1
        options.maxIdleThreads = 1
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
        DispatchQueue.global().async {
            let rc = mkdir(sandbox, 0o755)
            mkdirResult.withLock { $0 = rc == 0 ? 0 : errno }
            mkdirDone.signal()
        }
        try #require(preparing.wait(timeout: .now() + 30) == .success, "the mkdir never reached the provider")
        let statfsDone = DispatchSemaphore(value: 0)
        let mountpoint = m.mountpoint
        DispatchQueue.global().async {
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
        var st = stat()
        #expect(lstat(sandbox, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR)
    }
}
