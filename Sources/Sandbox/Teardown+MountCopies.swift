import LinuxBlock

extension Teardown {
    /// Pushes a step that, before the unmounts below it, detaches the copies of the mounts at `paths` (mounted
    /// now) that other mount namespaces took (see MountCopies): left there, our unmounts succeed while the
    /// copies keep the filesystems and devices busy, and the teardown stops half-way at the device (zram
    /// reset: EBUSY). A copy that cannot be detached (a user namespace's, which the kernel locks) fails the
    /// step with EBUSY before anything is torn down, naming its namespace and process.
    func pushReleaseOfCopies(_ paths: [String]) throws(SandboxError) {
        let targets = try step("stat \(paths.joined(separator: ", "))") {
            try paths.map { path throws(SystemError) in try MountCopies.Target.mounted(at: path) }
        }
        push("release copies of \(paths.joined(separator: ", ")) in other mount namespaces", repeatable: true) {
            try MountCopies.release(targets)
        }
    }
}
