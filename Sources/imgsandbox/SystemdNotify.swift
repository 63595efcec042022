import FoundationEssentials
import Glibc
import Logging

/// sd_notify(3) without libsystemd: one datagram to the unix socket in $NOTIFY_SOCKET (a path, or '@'
/// and a name for an abstract socket). A Type=notify unit learns from READY=1 that the mount is live
/// and from STOPPING=1 that teardown began. Without $NOTIFY_SOCKET (not under systemd) it does nothing.
enum SystemdNotify {
    @discardableResult
    static func send(_ state: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                     logger: Logger) -> Bool {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return false }
        guard path.hasPrefix("/") || path.hasPrefix("@") else {
            logger.warning("NOTIFY_SOCKET \(path): only unix socket paths and @abstract names are supported; not notified")
            return false
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }  // abstract: a leading NUL, and no terminating one
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            logger.warning("NOTIFY_SOCKET \(path): too long; not notified")
            return false
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            logger.warning("sd_notify socket: \(String(cString: strerror(errno)))")
            return false
        }
        defer { close(fd) }
        let message = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, message, message.count, Int32(MSG_NOSIGNAL), $0, length) }
        }
        guard sent == message.count else {
            logger.warning("sd_notify to \(path): \(String(cString: strerror(errno)))")
            return false
        }
        return true
    }
}
