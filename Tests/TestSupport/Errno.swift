import Glibc

/// errno of a failed call (one that returned -1), 0 on success: a call that wrongly succeeds fails the
/// check instead of passing on a stale errno.
public func errnoOf(_ rc: Int32) -> Int32 { rc == -1 ? errno : 0 }
public func errnoOf(_ rc: Int) -> Int32 { rc == -1 ? errno : 0 }

/// The same for a call that returns a descriptor, which is closed when it wrongly succeeds.
public func errnoOf(fd: Int32) -> Int32 {
    guard fd >= 0 else { return errno }
    close(fd)
    return 0
}
