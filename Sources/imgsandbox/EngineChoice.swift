import FoundationEssentials
import Glibc
import LinuxBlock
import Sandbox

enum EngineKind: String, CaseIterable {
    case auto, dm, overlay
}

/// Which engine `serve` uses, and why: dm when device-mapper is usable (after trying to load
/// dm-snapshot where the kernel has modules), else overlay.
struct EngineChoice {
    let kind: EngineKind
    let reason: String

    static func choose(_ requested: EngineKind) -> EngineChoice {
        switch requested {
        case .dm: return EngineChoice(kind: .dm, reason: "requested with --engine dm")
        case .overlay: return EngineChoice(kind: .overlay, reason: "requested with --engine overlay")
        case .auto:
            if deviceMapperUsable() {
                return EngineChoice(kind: .dm, reason: "device-mapper is usable (/dev/mapper/control answers)")
            }
            return EngineChoice(kind: .overlay, reason: "device-mapper is not usable on this kernel (no /dev/mapper/control after modprobe dm-snapshot)")
        }
    }

    /// Loads the modules a sandbox needs where the kernel has modules; a kernel with them built in, or
    /// without module support, makes this a no-op.
    static func loadModules() {
        for module in ["loop", "dm-snapshot", "zram", "overlay", "fuse"] {
            _ = try? Command.run(["modprobe", "-q", module])
        }
    }

    static func deviceMapperUsable() -> Bool {
        if !DeviceMapper.isAvailable { loadModules() }
        return DeviceMapper.isAvailable
    }

    func makeEngine(names: InstanceNames) throws -> any SandboxEngine {
        switch kind {
        case .dm:
            return DeviceMapperEngine(names: names, deviceMapper: try DeviceMapper(), zramLedger: names.zramLedger)
        case .overlay, .auto:
            return OverlayEngine(names: names, zramLedger: names.zramLedger)
        }
    }
}
