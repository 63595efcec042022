import ArgumentParser
import FoundationEssentials
import Glibc
import LinuxBlock
import Sandbox
import SandboxFS
import SandboxRun

struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check what sandboxes need from this machine and say which engine serve would use.")

    struct Check {
        let name: String
        let ok: Bool
        let detail: String
        let fix: String
    }

    func run() throws {
        EngineChoice.loadModules()
        let filesystems = (try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8)) ?? ""
        func hasFilesystem(_ name: String) -> Bool {
            filesystems.split(separator: "\n").contains { $0.split(separator: "\t").last == Substring(name) }
        }
        let fuse = access("/dev/fuse", R_OK | W_OK) == 0
        let fusermount = ["/usr/bin/fusermount3", "/bin/fusermount3"].contains { (path: String) in access(path, X_OK) == 0 }
        let loop = access("/dev/loop-control", R_OK | W_OK) == 0
        let dm = DeviceMapper.isAvailable
        let zram = Zram().isAvailable
        let checks = [
            Check(name: "FUSE (/dev/fuse)", ok: fuse, detail: fuse ? "present" : "missing",
                  fix: "enable CONFIG_FUSE_FS or `modprobe fuse`"),
            Check(name: "fusermount3", ok: fusermount, detail: fusermount ? "present" : "missing",
                  fix: "apt-get install fuse3"),
            Check(name: "loop devices (/dev/loop-control)", ok: loop, detail: loop ? "present" : "missing",
                  fix: "enable CONFIG_BLK_DEV_LOOP or `modprobe loop`"),
            Check(name: "device-mapper (/dev/mapper/control)", ok: dm,
                  detail: dm ? "present (dm-snapshot loaded where modules exist)" : "missing",
                  fix: "enable CONFIG_BLK_DEV_DM and CONFIG_DM_SNAPSHOT or `modprobe dm-snapshot`; without it the overlay engine is used"),
            Check(name: "zram (/sys/class/zram-control)", ok: zram, detail: zram ? "present" : "missing",
                  fix: "enable CONFIG_ZRAM or `modprobe zram`; without it the overlay engine keeps changes in a size-limited tmpfs"),
            Check(name: "ext4", ok: hasFilesystem("ext4"), detail: hasFilesystem("ext4") ? "supported" : "missing",
                  fix: "enable CONFIG_EXT4_FS or `modprobe ext4`"),
            // FAT partitions are served by the daemon itself (FATFS): never a missing piece.
            Check(name: "FAT partitions (boot, EFI)", ok: true,
                  detail: "served by the daemon (no kernel vfat needed; kernel vfat \(hasFilesystem("vfat") ? "present" : "absent"), not used)",
                  fix: ""),
            Check(name: "overlayfs", ok: hasFilesystem("overlay"), detail: hasFilesystem("overlay") ? "supported" : "missing",
                  fix: "enable CONFIG_OVERLAY_FS or `modprobe overlay`"),
            Check(name: "bubblewrap (imgsandbox run, VM disk conversion)", ok: Bubblewrap.installedPath != nil, detail: Bubblewrap.installedPath ?? "missing",
                  fix: "apt-get install bubblewrap (run confines the image's code with it, and qemu-img runs in it)"),
        ]
        print(Self.dataPathLine())
        for check in checks {
            print("\(check.ok ? "ok     " : "MISSING") \(check.name): \(check.detail)")
            if !check.ok { print("        fix: \(check.fix)") }
        }
        printForeignArchitectures()
        printUnsweptInstances()
        let common = fuse && loop && hasFilesystem("ext4")
        let dmWorks = common && dm && zram
        let overlayWorks = common && hasFilesystem("overlay")
        if dmWorks || overlayWorks {
            let choice = EngineChoice.choose(.auto)
            print("engine: serve would use \(choice.kind.rawValue): \(choice.reason)")
            if choice.kind == .overlay, !zram { print("        the COW store would be a size-limited tmpfs (no zram)") }
        } else {
            print("engine: none can work here: fix the MISSING items above")
            throw ExitCode.failure
        }
    }

    /// Which data path serve would negotiate: passthrough needs libfuse 3.17+ here and a kernel built with
    /// CONFIG_FUSE_PASSTHROUGH (6.9+); the kernel's offer at INIT decides, and `status` shows the outcome.
    static func dataPathLine() -> String {
        let libfuse = "libfuse \(DataPath.libfuseVersion)"
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let kernel: Bool? = kernelConfig(release).map { $0.contains("CONFIG_FUSE_PASSTHROUGH=y") }
        guard DataPath.libfuseHasPassthrough else {
            return "info    data path: splice (\(libfuse) has no passthrough API; Tools/libfuse builds 3.18)"
        }
        switch kernel {
        case true?: return "info    data path: passthrough (\(libfuse), kernel \(release) has CONFIG_FUSE_PASSTHROUGH)"
        case false?: return "info    data path: splice (kernel \(release) has no CONFIG_FUSE_PASSTHROUGH; \(libfuse))"
        case nil: return "info    data path: passthrough if kernel \(release) offers it (6.9+), else splice (\(libfuse))"
        }
    }

    /// The running kernel's build configuration, from /proc/config.gz or /boot/config-RELEASE.
    private static func kernelConfig(_ release: String) -> String? {
        if let text = try? String(contentsOfFile: "/boot/config-\(release)", encoding: .utf8) { return text }
        guard access("/proc/config.gz", R_OK) == 0, access("/bin/zcat", X_OK) == 0 else { return nil }
        return try? Command.run(["/bin/zcat", "/proc/config.gz"])
    }

    /// Dead serve instances whose objects are still in the kernel: what holds them and what frees them.
    func printUnsweptInstances() {
        for leftover in StaleInstanceSweep.leftovers(deviceMapper: try? DeviceMapper()) {
            let lines = Status.lines(leftover)
            print("LEFT    \(lines[0])")
            for line in lines.dropFirst() { print("    \(line)") }
        }
    }

    /// Which other architectures' images `run` can run: binfmt_misc ELF handlers, and whether they work
    /// inside a sandbox (the F flag) or only when the image holds the interpreter.
    func printForeignArchitectures() {
        let binfmt = BinfmtHandlers()
        let host = ELFIdentity.host()
        guard binfmt.mounted else {
            print("MISSING foreign architectures (imgsandbox run): binfmt_misc is not mounted")
            print("        fix: mount -t binfmt_misc binfmt_misc \(binfmt.directory); apt-get install qemu-user-static")
            return
        }
        var usable: [String] = [], partly: [String] = []
        for entry in binfmt.entries where entry.enabled && binfmt.globallyEnabled {
            guard let identity = entry.elfIdentity, host.map({ !identity.runsNatively(on: $0) }) ?? true else { continue }
            let name = identity.machine == 40 ? "armhf/armel" : identity.architecture
            if entry.interpreterPreopened { usable.append("\(name) (\(entry.name))") } else { partly.append("\(name) (\(entry.name), only where the image holds \(entry.interpreter))") }
        }
        let ok = !usable.isEmpty
        print("\(ok ? "ok     " : "MISSING") foreign architectures (imgsandbox run): \(ok ? usable.joined(separator: ", ") : "none")")
        if !partly.isEmpty { print("        without the F flag: \(partly.joined(separator: ", "))") }
        if !ok { print("        fix: apt-get install qemu-user-static (registers qemu-user with the F flag)") }
    }
}
