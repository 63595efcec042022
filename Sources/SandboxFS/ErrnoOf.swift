import Glibc
import LinuxBlock
import Sandbox

/// The errno a caller should see for any error thrown below a request.
func errnoCode(of error: any Error) -> Int32 {
    (error as? any ErrnoCarrying)?.errno ?? EIO
}
