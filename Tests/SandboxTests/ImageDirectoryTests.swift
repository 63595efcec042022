import Foundation
import Glibc
import ImageCache
import Testing
@testable import Sandbox

/// Which files of IMAGES_DIR are images, under which NAME, and which one serves a NAME several offer.
@Suite struct ImageDirectoryTests {
    @Test func namesAndTheOrderOfCollisions() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("imgsandbox-dir-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: root + "/real.img", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let files = ["raspios.qcow2", "raspios.zip", "raspios.img.xz", "raspios.img.gz", "raspios.img", "fedora.raw.xz",
                     "yocto.wic.bz2", "haos.qcow2.xz", "haos.vmdk.zip", "cloud.tar.xz", "notes.txt", ".hidden.img", "x.zip.xz"]
        for file in files { #expect(FileManager.default.createFile(atPath: root + "/" + file, contents: Data([1]))) }
        #expect(symlink(root + "/fedora.raw.xz", root + "/linked.raw.xz") == 0)
        #expect(symlink("/nonexistent", root + "/dangling.img") == 0)
        let scan = ImageDirectory.scan(root)
        #expect(Set(scan.keys) == ["raspios", "fedora", "yocto", "haos", "cloud", "linked"])
        // Plain, compressed (by name), archive, VM disk.
        #expect(scan["raspios"]!.map(\.fileName) == ["raspios.img", "raspios.img.gz", "raspios.img.xz", "raspios.zip", "raspios.qcow2"])
        #expect(scan["haos"]!.map(\.fileName) == ["haos.vmdk.zip", "haos.qcow2.xz"])
        #expect(scan["haos"]!.map(\.format) == [.archive(.zip, nil), .vm(.qcow2, .xz)])
        // A symlink is read as its own name says, from the file it resolves to.
        #expect(scan["linked"]!.map(\.path) == [root + "/fedora.raw.xz"])
        #expect(ImageDirectory.sources(of: "raspios", in: root).first?.format == .raw)
        #expect(ImageDirectory.sources(of: "../raspios", in: root).isEmpty)
    }
}
