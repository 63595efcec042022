import Foundation
import Glibc
import Testing

/// One serve instance (allow_other by default, for the non-root checks) with one sandbox of an image whose root
/// holds two identical fresh scratch directories: `d/` is used through the hidden mount, `f/` through
/// FUSE. Each holds files that came with the image (so copy-up is exercised): `lower.bin` with a
/// user.* xattr and a security.capability, and `lowerdir/inner`.
final class ConformanceFixture {
    let serve: ServeFixture
    let hiddenMount: String
    let fuseRoot: String

    var directScratch: String { hiddenMount + "/d" }
    var fuseScratch: String { fuseRoot + "/f" }

    /// `capability: false` leaves out the security.capability, which a tree on 9p (the VM's writable
    /// folder) cannot hold, for suites that do not check it.
    init(capability: Bool = true) throws {
        serve = try ServeFixture(images: [])
        do {
            let tree = serve.work + "/root"
            for side in ["d", "f"] {
                let dir = "\(tree)/\(side)"
                try FileManager.default.createDirectory(atPath: dir + "/lowerdir", withIntermediateDirectories: true)
                try "lower data\n".write(toFile: dir + "/lower.bin", atomically: false, encoding: .utf8)
                try "inner\n".write(toFile: dir + "/lowerdir/inner", atomically: false, encoding: .utf8)
                try run(["setfattr", "-n", "user.lower", "-v", "1", dir + "/lower.bin"])
                if capability { try run(["setcap", "cap_net_raw+ep", dir + "/lower.bin"]) }
            }
            try serve.makeImage("conf", kind: "whole-ext4", extra: ["--root-dir", tree, "--size", "64M"])
            try serve.start()
            fuseRoot = serve.sandbox("conf", "s")
            guard mkdir(fuseRoot, 0o755) == 0 else {
                throw CommandFailed(argv: ["mkdir", fuseRoot], status: errno, output: String(cString: strerror(errno)))
            }
            let rows = try serve.status()
            guard let path = rows.first?["mount_path"] as? String else {
                throw CommandFailed(argv: ["status"], status: 0, output: "no mount_path in \(rows)")
            }
            hiddenMount = path
        } catch {
            serve.close()
            throw error
        }
    }

    /// Stops the daemon and checks that nothing is left behind.
    func close() {
        #expect(serve.stop() == 0)
        serve.close()
    }
}
