import Glibc

/// Retries a release (zram reset, dm remove) that answers EBUSY, for a bounded time, then fails naming
/// what holds the device. The holder is often another process's mount namespace made a moment ago (a copy
/// of our mounts that goes when it pivots or ends), or a file closed elsewhere whose final release is still
/// running; the kernel signals neither (no event when a superblock's last reference goes), so the call is
/// retried with backoff: 10 ms doubling to 0.5 s, 5 s in all by default.
public enum BusyRetry {
    public static func releasing(_ device: String, budgetSeconds: Double = 5,
                                 _ body: () throws(SystemError) -> Void) throws(SystemError) {
        var waited = 0.0
        var pause = 0.01
        while true {
            do {
                try body()
                return
            } catch where error.errno == EBUSY {
                guard waited < budgetSeconds else {
                    let holders = MountUsers.describe(device: device)
                    throw SystemError(error.operation, "\(error.object) (still busy after \(waited) s; \(holders))", errno: EBUSY)
                }
                usleep(useconds_t(pause * 1_000_000))
                waited += pause
                pause = min(pause * 2, 0.5)
            }
        }
    }
}
