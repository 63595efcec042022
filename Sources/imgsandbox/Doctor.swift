import ArgumentParser
import FoundationEssentials
import Glibc
import LinuxBlock

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
            Check(name: "vfat", ok: hasFilesystem("vfat"), detail: hasFilesystem("vfat") ? "supported" : "missing (boot partitions are not needed for sandboxes)",
                  fix: "enable CONFIG_VFAT_FS or `modprobe vfat`"),
            Check(name: "overlayfs", ok: hasFilesystem("overlay"), detail: hasFilesystem("overlay") ? "supported" : "missing",
                  fix: "enable CONFIG_OVERLAY_FS or `modprobe overlay`"),
        ]
        for check in checks {
            print("\(check.ok ? "ok     " : "MISSING") \(check.name): \(check.detail)")
            if !check.ok { print("        fix: \(check.fix)") }
        }
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
}
