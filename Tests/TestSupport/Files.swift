import Glibc

/// Inverts one byte of a file in place (XOR 0x55), to corrupt a stream or a table at a known place.
public func flipByte(_ path: String, at offset: Int) throws {
    struct FlipFailed: Error, CustomStringConvertible { let description: String }
    let fd = open(path, O_RDWR | O_CLOEXEC)
    guard fd >= 0 else { throw FlipFailed(description: "open \(path): errno \(errno)") }
    defer { close(fd) }
    var byte: UInt8 = 0
    guard pread(fd, &byte, 1, off_t(offset)) == 1 else { throw FlipFailed(description: "read \(path) at \(offset)") }
    byte ^= 0x55
    guard pwrite(fd, &byte, 1, off_t(offset)) == 1 else { throw FlipFailed(description: "write \(path) at \(offset)") }
}
