import Dispatch
import FoundationEssentials
import Glibc
import LinuxBlock

/// The daemon's control endpoint: a unix stream socket (mode 0600). A client sends one request line
/// (JSON; none at all means status) and reads the answer until the daemon closes the connection: one
/// JSON document, or for a save one JSON line per progress step. Only root can connect, like only root
/// can read the hidden mounts. Each connection is served on its own thread: a save takes minutes.
final class ControlSocket: Sendable {
    /// Writes one chunk of the answer; false once the client is gone.
    typealias Send = (Data) -> Bool
    private let path: String
    private let fd: Int32
    private let respond: @Sendable (Data, Send) -> Void
    static let maxRequest = 64 << 10

    init(path: String, respond: @escaping @Sendable (_ request: Data, _ send: Send) -> Void) throws {
        self.path = path
        self.respond = respond
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ValidationFailure("socket: \(SystemError.describe(errno))") }
        var address = try Self.address(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, chmod(path, 0o600) == 0, listen(fd, 16) == 0 else {
            let error = errno
            close(fd)
            throw ValidationFailure("control socket \(path): \(SystemError.describe(error))")
        }
    }

    func start() {
        DispatchQueue(label: "imgsandbox-control").async { [self] in serve() }
    }

    private func serve() {
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return  // closed by stop()
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            DispatchQueue.global().async { [self] in
                let request = Self.readRequest(client)
                respond(request) { Self.send($0, to: client) }
                close(client)
            }
        }
    }

    /// Up to the first newline (or the client's half-close), at most maxRequest bytes.
    private static func readRequest(_ client: Int32) -> Data {
        var data = Data()
        var byte: UInt8 = 0
        while data.count < maxRequest {
            let count = read(client, &byte, 1)
            if count < 0, errno == EINTR { continue }
            if count <= 0 || byte == 10 { break }
            data.append(byte)
        }
        return data
    }

    private static func send(_ data: Data, to client: Int32) -> Bool {
        data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.send(client, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0, errno == EINTR { continue }
                if written <= 0 { return false }
                offset += written
            }
            return true
        }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        unlink(path)
    }

    /// Sends `request` and reads the whole answer.
    static func query(_ path: String, request: Data = Data()) throws -> Data {
        var data = Data()
        try exchange(path, request: request) { data.append($0) }
        return data
    }

    /// Sends `request` and hands each newline-terminated line of the answer to `line` as it arrives.
    static func stream(_ path: String, request: Data, line: (Data) throws -> Void) throws {
        var pending = Data()
        try exchange(path, request: request) { chunk in
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 10) {
                try line(pending[pending.startIndex..<newline])
                pending.removeSubrange(pending.startIndex...newline)
            }
        }
        if !pending.isEmpty { try line(pending) }
    }

    private static func exchange(_ path: String, request: Data, chunk: (Data) throws -> Void) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ValidationFailure("socket: \(SystemError.describe(errno))") }
        defer { close(fd) }
        var address = try address(path)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw ValidationFailure("cannot reach the daemon at \(path): \(SystemError.describe(errno))") }
        let line = request + Data([10])
        guard send(line, to: fd) else { throw ValidationFailure("write to \(path): \(SystemError.describe(errno))") }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0, errno == EINTR { continue }
            if count <= 0 { break }
            try chunk(Data(buffer[0..<count]))
        }
    }

    private static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw ValidationFailure("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }
}
