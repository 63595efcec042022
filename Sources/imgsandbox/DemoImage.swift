import FoundationEssentials
import Glibc
import LinuxBlock

/// `serve` with no arguments on an empty ./images makes demo.img: a 64 MiB ext4 (4 KiB blocks, no
/// partition table) holding a short guide, so a newcomer has something to mkdir a sandbox of.
enum DemoImage {
    static func ensure(in directory: String) throws {
        let existing = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        guard !existing.contains(where: { $0.hasSuffix(".img") }) else { return }
        let tree = FileManager.default.temporaryDirectory.appendingPathComponent("imgsandbox-demo-\(getpid())")
        try FileManager.default.createDirectory(at: tree.appendingPathComponent("etc"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tree) }
        try "demo\n".write(to: tree.appendingPathComponent("etc/hostname"), atomically: true, encoding: .utf8)
        try """
            This is imgsandbox's demo image. Change anything here: the image file is never written.
            rmdir this sandbox to throw the changes away.

            """.write(to: tree.appendingPathComponent("README"), atomically: true, encoding: .utf8)
        let image = directory + "/demo.img"
        do {
            _ = try Command.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "demo", "-d", tree.path, image, "64M"])
        } catch {
            try? FileManager.default.removeItem(atPath: image)
            throw ValidationFailure("cannot make the demo image \(image): \(error)")
        }
        print("made demo image \(image)")
    }
}
