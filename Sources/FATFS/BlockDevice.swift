import Glibc
import Synchronization

/// The bytes of one partition. `read` fills the whole buffer or throws; ranges outside `0..<size` throw EIO.
public protocol FATBlockDevice: Sendable {
    var size: UInt64 { get }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FATError)
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(FATError)
    func flush() throws(FATError)
}

extension FATBlockDevice {
    func checkRange(_ offset: UInt64, _ count: Int) throws(FATError) {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= size else {
            throw FATError(EIO, "access of \(count) bytes at offset \(offset) beyond the partition's \(size) bytes")
        }
    }

    func readBytes(at offset: UInt64, count: Int) throws(FATError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withMutableBytes { (buffer) throws(FATError) in try read(at: offset, into: buffer) }
        return bytes
    }

    func writeBytes(at offset: UInt64, _ bytes: [UInt8]) throws(FATError) {
        try bytes.withBytes { (buffer) throws(FATError) in try write(at: offset, from: buffer) }
    }
}

/// A byte range of a file descriptor the caller owns and keeps open while this lives (an image file and its
/// partition's range; in the daemon the sandbox's Teardown owns it).
/// pread/pwrite only, so it is safe to share between threads.
public final class FileRegionDevice: FATBlockDevice {
    let fd: Int32
    let offset: UInt64
    public let size: UInt64
    let writable: Bool

    public init(fd: Int32, offset: UInt64, size: UInt64, writable: Bool) {
        self.fd = fd
        self.offset = offset
        self.size = size
        self.writable = writable
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FATError) {
        try checkRange(offset, buffer.count)
        let start = off_t(self.offset + offset)
        try WholeTransfer.read(fd, into: buffer, at: start,
                               failed: "read of \(buffer.count) bytes at partition offset \(offset)",
                               ended: "short read at partition offset \(offset): file ends early")
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(FATError) {
        guard writable else { throw FATError.readOnly }
        try checkRange(offset, buffer.count)
        try WholeTransfer.write(fd, from: buffer, at: off_t(self.offset + offset),
                                failed: "write of \(buffer.count) bytes at partition offset \(offset)")
    }

    public func flush() throws(FATError) {
        guard writable else { return }
        if fsync(fd) != 0 { throw FATError(errno, "fsync of the partition failed") }
    }
}

/// A partition held in memory (tests, fuzzing).
public final class MemoryBlockDevice: FATBlockDevice {
    let storage: Mutex<[UInt8]>
    let writable: Bool
    public let size: UInt64

    public init(bytes: [UInt8], writable: Bool = true) {
        size = UInt64(bytes.count)
        storage = Mutex(bytes)
        self.writable = writable
    }

    public var bytes: [UInt8] { storage.withLock { $0 } }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FATError) {
        try checkRange(offset, buffer.count)
        storage.withLock { bytes in
            bytes.withUnsafeBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(offset)..<Int(offset) + buffer.count]))
            }
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(FATError) {
        guard writable else { throw FATError.readOnly }
        try checkRange(offset, buffer.count)
        storage.withLock { bytes in
            bytes.withUnsafeMutableBytes { dst in
                UnsafeMutableRawBufferPointer(rebasing: dst[Int(offset)..<Int(offset) + buffer.count]).copyMemory(from: buffer)
            }
        }
    }

    public func flush() throws(FATError) {}
}

/// pread/pwrite of a whole buffer: short transfers continue, EINTR is retried. Errors say `failed` with
/// the errno ("... failed"); a read that meets the end of the file, or a write that moves nothing, is EIO.
enum WholeTransfer {
    static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: off_t,
                     failed: @autoclosure () -> String, ended: @autoclosure () -> String) throws(FATError) {
        let outcome = run(buffer.count) { pread(fd, buffer.baseAddress! + $0, buffer.count - $0, offset + off_t($0)) }
        switch outcome {
        case .done: return
        case .ended: throw FATError(EIO, ended())
        case .failed(let code): throw FATError(code, "\(failed()) failed")
        }
    }

    static func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer, at offset: off_t,
                      failed: @autoclosure () -> String) throws(FATError) {
        let outcome = run(buffer.count) { pwrite(fd, buffer.baseAddress! + $0, buffer.count - $0, offset + off_t($0)) }
        switch outcome {
        case .done: return
        case .ended: throw FATError(EIO, "\(failed()) failed (nothing written)")
        case .failed(let code): throw FATError(code, "\(failed()) failed")
        }
    }

    private enum Outcome { case done, ended, failed(Int32) }

    /// Calls `transfer(done)` (the rest of `count` bytes from `done` on) until all of it is moved.
    private static func run(_ count: Int, _ transfer: (Int) -> Int) -> Outcome {
        var done = 0
        while done < count {
            let moved = transfer(done)
            if moved < 0 {
                if errno == EINTR { continue }
                return .failed(errno)
            }
            if moved == 0 { return .ended }
            done += moved
        }
        return .done
    }
}
