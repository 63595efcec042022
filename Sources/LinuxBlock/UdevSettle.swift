import Glibc

/// udev opens new and changed block devices to probe them (blkid). A remove or reset that lands during
/// such a probe fails with EBUSY although nothing of ours uses the device: wait until udev's event queue
/// is empty (`udevadm settle`, an event wait, not a timer) and try again, a bounded number of times.
enum UdevSettle {
    static let attempts = 3

    static func retryingWhileUdevProbes<T>(_ body: () throws(SystemError) -> T) throws(SystemError) -> T {
        var attempt = 1
        while true {
            do {
                return try body()
            } catch where error.errno == EBUSY && attempt < attempts && settle() {
                attempt += 1
            }
        }
    }

    /// False where there is no udev (nothing to wait for: the EBUSY is real).
    private static func settle() -> Bool {
        for path in ["/usr/bin/udevadm", "/bin/udevadm", "/sbin/udevadm"] where access(path, X_OK) == 0 {
            return (try? Command.run([path, "settle", "--timeout=10"])) != nil
        }
        return false
    }
}
