import Glibc
import LinuxBlock

/// Deterministic pseudo-random numbers (SplitMix64): small, seedable, the same sequence everywhere, so a
/// failing input can be reproduced.
public struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

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

/// "No such file or directory (ENOENT)", as the daemon prints errno.
public func errnoName(_ code: Int32) -> String { SystemError.describe(code) }
