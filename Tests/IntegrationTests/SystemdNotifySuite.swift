import Foundation
import Glibc
import Testing

/// What imgsandbox.service (Type=notify) relies on: `serve --foreground` sends READY=1 to $NOTIFY_SOCKET
/// once the FUSE mount is live, and STOPPING=1 when it starts tearing down; to a socket path and to an
/// abstract ('@') one. The test is the listening end of the datagram socket, as systemd would be.
@Suite(.serialized, .enabled(if: Environment.canServe, Environment.skipReason))
struct SystemdNotifySuite {
    @Test(arguments: ["path", "abstract"])
    func readyOnceMountedAndStoppingAtTeardown(kind: String) throws {
        let fixture = try ServeFixture(images: [("pi", "whole-ext4", [])])
        defer { fixture.close() }
        let name = kind == "path" ? fixture.work + "/notify.sock" : "@imgsandbox-test-notify-\(getpid())"
        let listener = try NotifyListener(name)
        defer { listener.close() }
        try fixture.start(environment: ["NOTIFY_SOCKET": name])
        let ready = try #require(listener.receive(), "no datagram on \(name)")
        #expect(ready.split(separator: "\n").contains("READY=1"), "first message: \(ready)")
        #expect(MountForm.entry(fixture.mountpoint) != nil, "READY=1 arrived but the mount is not there")
        let sandbox = fixture.sandbox("pi", "n1")
        #expect(mkdir(sandbox, 0o755) == 0)
        #expect(fixture.stop() == 0)
        let stopping = try #require(listener.receive(), "no STOPPING=1 at teardown")
        #expect(stopping.split(separator: "\n").contains("STOPPING=1"), "second message: \(stopping)")
    }
}

/// A bound unix datagram socket; receive() waits up to 60 s for one message.
final class NotifyListener {
    let fd: Int32
    let path: String?

    init(_ name: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        path = bytes.first == UInt8(ascii: "@") ? nil : name
        if path == nil { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        guard bound == 0, setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            let saved = errno
            Glibc.close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: saved) ?? .EIO)
        }
    }

    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : nil
    }

    func close() {
        Glibc.close(fd)
        if let path { unlink(path) }
    }
}
