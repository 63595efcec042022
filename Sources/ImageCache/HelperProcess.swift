import CLinux
import Glibc
import LinuxBlock
import SyscallFilter

/// qemu-img run for one job, confined (HelperConfinement): the files it may touch are handed over as
/// fds 3, 4, ... (it opens them as /proc/self/fd/N, so it reads the very files checked here), nothing
/// else stays open in it, it is killed at the deadline or when the cache is cancelled
/// (ImageCache.cancelAll kills the job's child: bwrap, whose namespace dies with it).
struct HelperProcess {
    let argv: [String]
    let file: String

    /// Most stdout kept (qemu-img's JSON); more is refused.
    static let outputLimit = 64 << 20

    /// Runs to its end; returns stdout. `progress` sees each stdout chunk as it arrives.
    /// `started` runs once the child is running.
    func run(passing fds: [Int32], deadline: ContinuousClock.Instant, job: Job, started: () -> Void = {},
             progress: (ArraySlice<UInt8>) -> Void = { _ in }) throws(CacheError) -> [UInt8] {
        // The system call filter goes last, so the handed files keep their numbers 3, 4, ...
        var owned = DescriptorSet()
        let filter: Int32
        do throws(SyscallFilterError) { filter = owned.insert(try SyscallFilter.program()) } catch {
            throw .refused(file: file, reason: "no system call filter for \(argv[0]): \(error)")
        }
        guard let command = HelperConfinement.command(argv, filterFD: 3 + fds.count) else {
            throw .refused(file: file, reason: HelperConfinement.missing)
        }
        let child: Command.SpawnedChild
        do throws(SystemError) { child = try Command.spawn(command, passing: fds + [filter], closingOthers: true) } catch {
            throw .system(operation: error.operation, path: error.operation == "fcntl(F_DUPFD_CLOEXEC)" ? file : argv[0], errno: error.errno)
        }
        owned.closeAll()
        let pid = child.pid
        job.adopt(child: pid)
        started()
        var (stdout, stderr) = ([UInt8](), [UInt8]())
        var timedOut = false
        var fdsToWatch = [pollfd(fd: child.stdout.raw, events: Int16(POLLIN), revents: 0), pollfd(fd: child.stderr.raw, events: Int16(POLLIN), revents: 0)]
        var chunk = [UInt8](repeating: 0, count: 65536)
        while fdsToWatch.contains(where: { $0.fd >= 0 }) {
            let left = ContinuousClock.now.duration(to: deadline).components
            let milliseconds = left.seconds < 0 ? 0 : Int32(min(left.seconds * 1000 + left.attoseconds / 1_000_000_000_000_000, 3_600_000))
            if milliseconds == 0 {
                timedOut = true
                kill(pid, SIGKILL)
                break
            }
            let ready = poll(&fdsToWatch, nfds_t(fdsToWatch.count), milliseconds)
            if ready < 0 && errno != EINTR { break }
            for index in fdsToWatch.indices where fdsToWatch[index].fd >= 0 && fdsToWatch[index].revents != 0 {
                let count = chunk.withUnsafeMutableBytes { read(fdsToWatch[index].fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    if index == 0 {
                        progress(chunk[0..<count])
                        if stdout.count < Self.outputLimit { stdout.append(contentsOf: chunk[0..<count]) }
                    } else {
                        stderr = Array((stderr + chunk[0..<count]).suffix(4096))
                    }
                } else if count == 0 || errno != EINTR {
                    fdsToWatch[index].fd = -1
                }
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let cancelled = job.release(child: pid)
        if cancelled { throw .cancelled(file: file) }
        if timedOut { throw .refused(file: file, reason: "\(argv[0]) \(argv[1]) did not finish in time (killed)") }
        let signal = status & 0x7f
        let code: Int32 = signal == 0 ? (status >> 8) & 0xff : 128 + signal
        guard code == 0 else {
            let text = String(decoding: stderr, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
            throw .helperFailed(file: file, command: "\(argv[0]) \(argv[1])", status: code, message: text)
        }
        guard stdout.count < Self.outputLimit else { throw .refused(file: file, reason: "\(argv[0]) \(argv[1]) printed more than \(Self.outputLimit) bytes") }
        return stdout
    }
}
