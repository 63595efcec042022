import Foundation

/// Tools/fault-inject/exhaust-devices.c built into a fixture's folder: preloaded into the daemon only, it
/// fakes a machine out of loop or zram devices, or without zram, while the file `faultFile` names the fault.
struct FaultInjector {
    let library: String
    let faultFile: String

    init(in work: String) throws {
        library = work + "/exhaust-devices.so"
        faultFile = work + "/fault"
        try run(["cc", "-shared", "-fPIC", "-O2", "-o", library, Paths.packageRoot + "/Tools/fault-inject/exhaust-devices.c", "-ldl"])
        try set("")
    }

    /// "loop", "zram", "no-zram" or "" (none); read by the daemon on every intercepted call.
    func set(_ fault: String) throws {
        try fault.write(toFile: faultFile, atomically: false, encoding: .utf8)
    }

    /// The daemon's environment.
    var environment: [String: String] { ["LD_PRELOAD": library, "IMGSANDBOX_FAULT_FILE": faultFile] }
}
