import Foundation
import Glibc
import LinuxBlock
import Testing
@testable import SandboxRun

/// ELF headers as the tools write them: class, byte order, e_machine, e_flags.
func elfHeader(is64Bit: Bool, machine: UInt16, flags: UInt32 = 0, bigEndian: Bool = false) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 64)
    bytes[0...3] = [0x7f, 0x45, 0x4c, 0x46]
    bytes[4] = is64Bit ? 2 : 1
    bytes[5] = bigEndian ? 2 : 1
    bytes[6] = 1
    bytes[16] = bigEndian ? 0 : 2   // ET_EXEC
    bytes[17] = bigEndian ? 2 : 0
    bytes[18] = bigEndian ? UInt8(machine >> 8) : UInt8(machine & 0xff)
    bytes[19] = bigEndian ? UInt8(machine & 0xff) : UInt8(machine >> 8)
    bytes[20] = bigEndian ? 0 : 1
    bytes[23] = bigEndian ? 1 : 0
    let flagsAt = is64Bit ? 48 : 36
    for i in 0..<4 {
        bytes[flagsAt + i] = UInt8(truncatingIfNeeded: flags >> (bigEndian ? 24 - 8 * i : 8 * i))
    }
    return bytes
}

/// The kernel's text for Debian's qemu-arm registration (cat /proc/sys/fs/binfmt_misc/qemu-arm).
let qemuArmEntry = """
    enabled
    interpreter /usr/libexec/qemu-binfmt/arm-binfmt-P
    flags: POF
    offset 0
    magic 7f454c4601010100000000000000000002002800
    mask ffffffffffffff00fffffffffffffffffeffffff

    """

final class Scratch {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "sandboxrun-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func write(_ relative: String, _ bytes: [UInt8]) throws {
        let url = URL(fileURLWithPath: path + "/" + relative)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(bytes).write(to: url)
    }
    func write(_ relative: String, _ text: String) throws { try write(relative, Array(text.utf8)) }
    func link(_ relative: String, to target: String) throws {
        let url = URL(fileURLWithPath: path + "/" + relative)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: url.path, withDestinationPath: target)
    }
    func root() throws -> ImageRoot {
        let fd = open(path, O_PATH_ | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(.ENOENT) }
        return ImageRoot(FileDescriptor(adopting: fd))
    }
}

let O_PATH_: Int32 = 0o10000000

let amd64 = ELFIdentity(is64Bit: true, littleEndian: true, machine: 62)
let armhfHeader = elfHeader(is64Bit: false, machine: 40, flags: 0x0500_0400)

@Suite struct ELFIdentityTests {
    @Test(arguments: [
        (elfHeader(is64Bit: false, machine: 40, flags: 0x0500_0400), "armhf"),
        (elfHeader(is64Bit: false, machine: 40, flags: 0x0500_0200), "armel"),
        (elfHeader(is64Bit: true, machine: 183), "arm64"),
        (elfHeader(is64Bit: true, machine: 62), "amd64"),
        (elfHeader(is64Bit: false, machine: 3), "i386"),
        (elfHeader(is64Bit: true, machine: 243), "riscv64"),
        (elfHeader(is64Bit: true, machine: 22, bigEndian: true), "s390x"),
        (elfHeader(is64Bit: true, machine: 21), "ppc64el"),
        (elfHeader(is64Bit: true, machine: 0x1234), "ELF machine 4660 (64-bit)"),
    ])
    func architectureNames(_ header: [UInt8], _ name: String) throws {
        #expect(try #require(ELFIdentity(header: header)).architecture == name)
    }

    @Test func refusesWhatIsNotAnELFHeader() {
        #expect(ELFIdentity(header: Array("#!/bin/sh\n".utf8) + [UInt8](repeating: 0, count: 60)) == nil)
        #expect(ELFIdentity(header: Array(elfHeader(is64Bit: true, machine: 62).prefix(60))) == nil)   // truncated 64-bit
        var badClass = elfHeader(is64Bit: true, machine: 62)
        badClass[4] = 3
        #expect(ELFIdentity(header: badClass) == nil)
    }

    @Test func nativeAndCompat() {
        #expect(ELFIdentity(header: elfHeader(is64Bit: true, machine: 62))!.runsNatively(on: amd64))
        #expect(ELFIdentity(header: elfHeader(is64Bit: false, machine: 3))!.runsNatively(on: amd64))
        #expect(!ELFIdentity(header: armhfHeader)!.runsNatively(on: amd64))
        let arm64 = ELFIdentity(is64Bit: true, littleEndian: true, machine: 183)
        #expect(ELFIdentity(header: armhfHeader)!.runsNatively(on: arm64))
        #expect(!ELFIdentity(header: elfHeader(is64Bit: true, machine: 62))!.runsNatively(on: arm64))
    }

    @Test func hostIsThisBinarysArchitecture() throws {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let expected = ["x86_64": "amd64", "aarch64": "arm64"][machine]
        try #require(expected != nil, "untested host \(machine)")
        #expect(ELFIdentity.host()?.architecture == expected)
    }
}

@Suite struct BinfmtTests {
    func fakeBinfmt(_ entries: [String: String], status: String? = "enabled\n") throws -> Scratch {
        let dir = try Scratch()
        if let status { try dir.write("status", status) }
        try dir.write("register", "")
        for (name, text) in entries { try dir.write(name, text) }
        return dir
    }

    @Test func parsesTheKernelsEntryText() throws {
        let dir = try fakeBinfmt(["qemu-arm": qemuArmEntry, "jar": "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n"])
        let binfmt = BinfmtHandlers(directory: dir.path)
        #expect(binfmt.mounted && binfmt.globallyEnabled)
        #expect(binfmt.entries.map(\.name) == ["qemu-arm"])   // the extension entry is not an ELF handler
        let entry = try #require(binfmt.entries.first)
        #expect(entry.interpreter == "/usr/libexec/qemu-binfmt/arm-binfmt-P" && entry.interpreterPreopened)
        #expect(entry.elfIdentity?.architecture == "armhf")
        #expect(binfmt.handlers(for: armhfHeader).map(\.name) == ["qemu-arm"])
        #expect(binfmt.handlers(for: elfHeader(is64Bit: true, machine: 183)).isEmpty)
        #expect(binfmt.handlers(for: elfHeader(is64Bit: false, machine: 40, bigEndian: true)).isEmpty)
    }

    @Test func disabledEntriesAndADisabledBinfmtMatchNothing() throws {
        let disabled = qemuArmEntry.replacingOccurrences(of: "enabled\n", with: "disabled\n")
        #expect(BinfmtHandlers(directory: try fakeBinfmt(["qemu-arm": disabled]).path).handlers(for: armhfHeader).isEmpty)
        #expect(BinfmtHandlers(directory: try fakeBinfmt(["qemu-arm": qemuArmEntry], status: "disabled\n").path)
            .handlers(for: armhfHeader).isEmpty)
        let unmounted = BinfmtHandlers(directory: try fakeBinfmt([:], status: nil).path)
        #expect(!unmounted.mounted)
    }

    @Test func malformedEntriesAreSkipped() throws {
        let bad = ["odd-hex": "enabled\ninterpreter /x\nflags: F\noffset 0\nmagic 7f4\n",
                   "mask-length": "enabled\ninterpreter /x\nflags: F\noffset 0\nmagic 7f45\nmask ff\n",
                   "offset": "enabled\ninterpreter /x\nflags: F\noffset 127\nmagic 7f4546\n"]
        #expect(BinfmtHandlers(directory: try fakeBinfmt(bad).path).entries.isEmpty)
    }
}

@Suite struct ArchitectureCheckTests {
    func image(_ shell: [UInt8] = armhfHeader) throws -> Scratch {
        let image = try Scratch()
        try image.write("usr/bin/dash", shell)
        try image.link("bin", to: "usr/bin")
        try image.link("usr/bin/sh", to: "dash")
        return image
    }

    func binfmt(_ entries: [String: String], status: String? = "enabled\n") throws -> (Scratch, BinfmtHandlers) {
        let dir = try Scratch()
        if let status { try dir.write("status", status) }
        for (name, text) in entries { try dir.write(name, text) }
        return (dir, BinfmtHandlers(directory: dir.path))
    }

    @Test func foreignImageRunsThroughAnFHandler() throws {
        let image = try image()
        let (keep, handlers) = try binfmt(["qemu-arm": qemuArmEntry])
        defer { _ = keep }
        let root = try image.root()
        let verdict = try ArchitectureCheck.check(command: "sh", root: root, host: amd64, binfmt: handlers)
        #expect(verdict == .emulated(ELFIdentity(header: armhfHeader)!, handler: "qemu-arm", compat32: true))
    }

    @Test func withoutAHandlerTheRefusalNamesTheFix() throws {
        let image = try image()
        let root = try image.root()
        let (keep1, none) = try binfmt([:])
        let (keep2, unmounted) = try binfmt([:], status: nil)
        defer { _ = (keep1, keep2) }
        #expect {
            try ArchitectureCheck.check(command: "/bin/sh", root: root, host: amd64, binfmt: none)
        } throws: { error in
            let text = (error as? RunError)?.description ?? ""
            return text.contains("armhf") && text.contains("amd64") && text.contains("apt-get install qemu-user-static")
                && text.contains("qemu-arm.conf") && !text.contains("mount -t binfmt_misc")
        }
        #expect {
            try ArchitectureCheck.check(command: "/bin/sh", root: root, host: amd64, binfmt: unmounted)
        } throws: { error in
            ((error as? RunError)?.description ?? "").contains("mount -t binfmt_misc binfmt_misc \(keep2.path)")
        }
    }

    @Test func aHandlerWithoutFNeedsItsInterpreterInTheImage() throws {
        let image = try image()
        let noF = qemuArmEntry.replacingOccurrences(of: "flags: POF", with: "flags: P")
        let (keep, handlers) = try binfmt(["qemu-arm": noF])
        defer { _ = keep }
        let root = try image.root()
        #expect {
            try ArchitectureCheck.check(command: "sh", root: root, host: amd64, binfmt: handlers)
        } throws: { error in
            ((error as? RunError)?.description ?? "").contains("qemu-arm lacks the F flag")
        }
        try image.write("usr/libexec/qemu-binfmt/arm-binfmt-P", "interpreter copied into the image")
        #expect(try ArchitectureCheck.check(command: "sh", root: root, host: amd64, binfmt: handlers)
            == .emulated(ELFIdentity(header: armhfHeader)!, handler: "qemu-arm", compat32: true))
    }

    @Test func nativeImagesAndScripts() throws {
        let image = try image(elfHeader(is64Bit: true, machine: 62))
        try image.write("usr/local/bin/tool", "#!/bin/sh -e\necho\n")
        let (keep, handlers) = try binfmt([:])
        defer { _ = keep }
        let root = try image.root()
        let native = ELFIdentity(header: elfHeader(is64Bit: true, machine: 62))!
        #expect(try ArchitectureCheck.check(command: "tool", root: root, host: amd64, binfmt: handlers) == .native(native, compat32: false))
    }

    @Test func symlinksResolveInsideTheImageNeverOnTheHost() throws {
        // /bin/sh -> /proc/self/exe would be this (native) test binary on the host; inside the image it is
        // nothing, so the only binary there (armhf) decides, and without a handler that is a refusal.
        let image = try Scratch()
        try image.link("bin/sh", to: "/proc/self/exe")
        try image.link("usr/bin/escape", to: "../../../../../../proc/self/exe")
        try image.write("usr/bin/prog", armhfHeader)
        let (keep, handlers) = try binfmt([:])
        defer { _ = keep }
        let root = try image.root()
        #expect(try ArchitectureCheck.check(command: "escape", root: root, host: amd64, binfmt: handlers) == .unknown)
        #expect(throws: RunError.self) { try ArchitectureCheck.check(command: "prog", root: root, host: amd64, binfmt: handlers) }
    }
}
