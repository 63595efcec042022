import Glibc

/// Can this kernel run the image's programs? Reads the ELF header of the command's binary (found inside
/// the image, symlinks resolved within it; a `#!` script counts as its interpreter), else of /bin/sh.
public enum ArchitectureCheck {
    public enum Verdict: Equatable {
        /// The kernel runs it itself; `compat32` when it is the 32-bit sibling of a 64-bit host.
        case native(ELFIdentity, compat32: Bool)
        /// A binfmt_misc handler runs it (qemu-user): by the F flag, or an interpreter inside the image.
        case emulated(ELFIdentity, handler: String, compat32: Bool)
        /// No ELF binary found to judge by: let exec decide.
        case unknown
    }

    static let searchPath = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    /// The ELF header (first 128 bytes, what binfmt_misc sees) of the binary `command` runs, and its path.
    static func binaryHeader(of command: String, in root: ImageRoot) -> (path: String, header: [UInt8])? {
        var path: String? = command.contains("/") ? command : searchPath.map { "\($0)/\(command)" }.first { root.read($0, limit: 1) != nil }
        for _ in 0..<4 {   // #! chains are bounded like the kernel's (BINPRM_MAX_RECURSION)
            guard let current = path, let bytes = root.read(current, limit: 256) else { return nil }
            if ELFIdentity(header: bytes) != nil { return (current, Array(bytes.prefix(128))) }
            guard bytes.starts(with: [0x23, 0x21]) else { return nil }   // "#!"
            let line = bytes.dropFirst(2).prefix { $0 != 0x0a }
            path = String(decoding: line, as: UTF8.self).split(separator: " ").first.map(String.init)
        }
        return nil
    }

    static func check(command: String, root: ImageRoot, host: ELFIdentity?,
                             binfmt: BinfmtHandlers) throws(RunError) -> Verdict {
        guard let host, let (path, header) = binaryHeader(of: command, in: root) ?? binaryHeader(of: "/bin/sh", in: root),
              let identity = ELFIdentity(header: header) else { return .unknown }
        let compat32 = !identity.is64Bit && host.is64Bit
        if identity.runsNatively(on: host) { return .native(identity, compat32: compat32) }
        let handlers = binfmt.handlers(for: header)
        if let usable = handlers.first(where: { $0.interpreterPreopened || root.read($0.interpreter, limit: 1) != nil }) {
            return .emulated(identity, handler: usable.name, compat32: compat32)
        }
        throw RunError(refusal(identity: identity, path: path, host: host, binfmt: binfmt, unusable: handlers))
    }

    static func refusal(identity: ELFIdentity, path: String, host: ELFIdentity, binfmt: BinfmtHandlers,
                        unusable: [BinfmtHandlers.Entry]) -> String {
        var text = "the image's programs are \(identity.architecture) (\(path)), this machine runs \(host.architecture), "
            + "and no binfmt_misc handler can run \(identity.architecture) programs inside a sandbox"
        for entry in unusable {
            text += "; handler \(entry.name) lacks the F flag and its interpreter \(entry.interpreter) is not in the image"
        }
        if !binfmt.mounted {
            text += ". Fix: mount -t binfmt_misc binfmt_misc \(binfmt.directory), then apt-get install qemu-user-static"
        } else if !binfmt.globallyEnabled {
            text += ". Fix: echo 1 > \(binfmt.directory)/status (binfmt_misc is disabled), and apt-get install qemu-user-static"
        } else {
            text += ". Fix: apt-get install qemu-user-static (it registers its handlers with the F flag"
            if let qemu = qemuName(identity) {
                text += "; where systemd does not register them: cat /usr/lib/binfmt.d/qemu-\(qemu).conf > \(binfmt.directory)/register"
            }
            text += ")"
        }
        return text
    }

    static func qemuName(_ identity: ELFIdentity) -> String? {
        switch identity.architecture {
        case "armhf", "armel": "arm"
        case "arm64": "aarch64"
        case "ppc64el": "ppc64le"
        case "riscv64", "s390x", "ppc64", "mips", "mipsel", "mips64", "mips64el", "m68k", "alpha", "sparc64", "sh4", "hppa": identity.architecture
        case "loong64": "loongarch64"
        case "powerpc": "ppc"
        default: nil
        }
    }
}

extension ArchitectureCheck {
    /// Whether exec can find `command` inside the image (by its path, or in run's PATH): when it cannot,
    /// run says so itself (exit 127, as a shell does) instead of bwrap's generic failure.
    static func findable(_ command: String, in root: ImageRoot) -> Bool {
        if command.contains("/") { return root.kind(command) != nil || root.read(command, limit: 1) != nil }
        return searchPath.contains { root.read("\($0)/\(command)", limit: 1) != nil }
    }
}
