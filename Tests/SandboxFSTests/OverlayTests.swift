import Foundation
import Glibc
import TestSupport
import Testing
@testable import SandboxFS

/// The overlay engine's hidden mounts: handles exist only with index=on,nfs_export=on.
extension SandboxFSTests {
    @Test func overlayWithoutHandlesIsRefusedAtMkdir() throws {
        let m = try MountedFS(backing: .overlay(nfsExport: false))
        defer { m.stop() }
        #expect(errnoOf(mkdir(m.path("alpha/sandboxes/s"), 0o755)) == EOPNOTSUPP)
        // The provider was asked to discard it again.
        #expect(m.provider.sandboxNames(image: "alpha") == [])
    }

    @Test func overlayWithNFSExportPassesThroughAndUnmounts() throws {
        let m = try MountedFS(backing: .overlay(nfsExport: true))
        defer { m.stop() }
        try #require(mkdir(m.path("alpha/sandboxes/s"), 0o755) == 0)
        let s = m.path("alpha/sandboxes/s")
        let ref = try #require(m.provider.sandbox(image: "alpha", name: "s"))
        try "upper".write(toFile: s + "/new", atomically: false, encoding: .utf8)
        #expect(readAll(ref.mountPath + ".upper/new") == "upper")
        #expect(mkdir(s + "/d", 0o755) == 0)
        #expect(rename(s + "/new", s + "/d/moved") == 0)
        #expect(readAll(s + "/d/moved") == "upper")
        // rmdir must leave nothing of ours in the overlay: the fake provider unmounts without MNT_DETACH.
        #expect(errnoOf(rmdir(s)) == 0)
        #expect(!MountedFS.isMounted(ref.mountPath))
    }
}
