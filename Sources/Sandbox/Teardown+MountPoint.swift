import LinuxBlock

extension Teardown {
    /// Pushed right before a mount's unmount step, so that it runs right after it and before the steps of the
    /// device below: removes the mount point. Every mount namespace made while the mount lived (unshare -m,
    /// bwrap, a container, any user's `unshare -Urm`) holds a copy of it that our unmount never reaches
    /// (private propagation), and the copy keeps the filesystem and its device busy (issue 23). Removing
    /// the directory makes the kernel detach the mounts on it in every other namespace, a user namespace's
    /// locked copy included (docs/TEARDOWN.md). ENOENT counts as done, so a retry runs it again harmlessly.
    func pushRemovalOfMountPoint(_ path: String) {
        push("remove \(path)") { try PrivateDirectory.remove(path) }
    }
}
