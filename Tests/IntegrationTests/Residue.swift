import Foundation
import Glibc
import LinuxBlock
import Sandbox

/// Kernel objects a serve instance may leave: mounts, loop devices, dm devices, zram devices.
enum Residue {
    static func find(work: String, instance: Int32?) -> [String] {
        settleUdev()
        var found: [String] = []
        let names = instance.map { InstanceNames(pid: $0) }
        for mountPoint in mountPoints() where mountPoint.hasPrefix(work) || (names.map { $0.holds(path: mountPoint) } ?? false) {
            found.append("mount \(mountPoint)")
        }
        // Images are in the test's own folder, or (in the VM) symlinks into an image cache that every
        // fixture shares: there a loop device is this instance's when its file name says so.
        let cache = ProcessInfo.processInfo.environment["IMGSANDBOX_TEST_IMAGE_CACHE"]
        for loop in LoopDevice.attached() {
            // Without an instance no daemon ran, so nothing outside `work` can be this test's.
            let labelled = instance.map { pid in loop.label.flatMap(InstanceNames.owner(loopLabel:)) == pid } ?? false
            let ours = loop.backingFile.hasPrefix(work)
                || (cache.map { loop.backingFile.hasPrefix($0) } ?? false) && labelled
                // The dm engine's 512-byte-sector COW loop is backed by a device: known by its label.
                || loop.backingFile.hasPrefix("/dev/") && labelled
            if ours { found.append("loop\(loop.index) -> \(loop.backingFile) (\(loop.label ?? "no label"))") }
        }
        if let instance { found += dmDevices(of: instance).map { "dm \($0)" } }
        // A process left running in a sandbox (`imgsandbox run` kills its whole PID namespace): its root is there.
        for process in rootedProcesses(under: work) { found.append("process \(process)") }
        // zram devices cannot carry a name: the daemon records each one right after hot_add, before it
        // is sized, and drops the record only after the reset (ZramAllocator). So every sized device
        // this instance made is in its ledger until freed, and the ledger outlives the instance while it
        // holds records: judging it alone leaves other suites' and processes' devices to them.
        if let instance {
            let records = (try? FileManager.default.contentsOfDirectory(atPath: InstanceNames(pid: instance).zramLedger)) ?? []
            found += records.map { "zram\($0) still recorded by instance \(instance)" }
        }
        return found
    }

    /// Where udev runs (the VM), its probes briefly hold devices we released (a loop device with autoclear
    /// goes away when the probe closes it): what remains is judged once udev's queue is empty.
    static func settleUdev() {
        if let udevadm = ["/usr/bin/udevadm", "/bin/udevadm"].first(where: { (path: String) in access(path, X_OK) == 0 }),
           FileManager.default.fileExists(atPath: "/run/udev/control") {
            _ = try? run([udevadm, "settle", "--timeout=10"], allowFailure: true)
        }
    }

    /// Last resort after a failed test, so one failure does not poison the next tests.
    static func forceClean(work: String, instance: Int32?) {
        for mountPoint in mountPoints().reversed() where mountPoint.hasPrefix(work) {
            umount2(mountPoint, Int32(MNT_DETACH))
        }
        let runDirectory = instance.map { InstanceNames(pid: $0).runDirectory + "/" } ?? InstanceNames.defaultRunRoot + "/"
        for mountPoint in mountPoints().reversed() where mountPoint.hasPrefix(runDirectory) {
            umount2(mountPoint, Int32(MNT_DETACH))
        }
    }

    /// "PID (comm) root PATH" of every process whose root directory is under `prefix`.
    static func rootedProcesses(under prefix: String) -> [String] {
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { Int($0) != nil }
        return pids.compactMap { pid in
            guard let root = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/root"),
                  root.hasPrefix(prefix) else { return nil }
            return "\(pid) (\(read("/proc/\(pid)/comm") ?? "?")) root \(root)"
        }
    }

    static func mountPoints() -> [String] { Mount.mountPoints().map(\.mountPoint) }

    /// Names of dm devices of `instance` (nil: of any instance).
    static func dmDevices(of instance: Int32?) -> [String] {
        blockDevices(prefix: "dm-").compactMap { device in
            guard let name = read("/sys/block/\(device)/dm/name"), let owner = InstanceNames.owner(dmName: name),
                  instance.map({ $0 == owner }) ?? true else { return nil }
            return name
        }
    }

    static func blockDevices(prefix: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/block")) ?? []).filter { $0.hasPrefix(prefix) }
    }

    static func read(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
