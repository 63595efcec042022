import Foundation
import Glibc

/// Kernel objects a serve instance may leave: mounts, loop devices, dm devices, zram devices.
enum Residue {
    static func find(work: String, instance: Int32?) -> [String] {
        var found: [String] = []
        let runDirectory = instance.map { "/run/imgsandbox/\($0)" }
        for mountPoint in mountPoints() where mountPoint.hasPrefix(work) || (runDirectory.map { mountPoint.hasPrefix($0) } ?? false) {
            found.append("mount \(mountPoint)")
        }
        for device in blockDevices(prefix: "loop") {
            if let backing = read("/sys/block/\(device)/loop/backing_file"), backing.hasPrefix(work) {
                found.append("\(device) -> \(backing)")
            }
        }
        for device in blockDevices(prefix: "dm-") {
            if let name = read("/sys/block/\(device)/dm/name"), name.hasPrefix("imgsandbox-") { found.append("dm \(name)") }
        }
        for device in blockDevices(prefix: "zram") {
            if let size = read("/sys/block/\(device)/disksize"), size != "0" { found.append("\(device) disksize \(size)") }
        }
        return found
    }

    /// Last resort after a failed test, so one failure does not poison the next tests.
    static func forceClean(work: String, instance: Int32?) {
        for mountPoint in mountPoints().reversed() where mountPoint.hasPrefix(work) || mountPoint.hasPrefix("/run/imgsandbox/") {
            umount2(mountPoint, Int32(MNT_DETACH))
        }
        for device in blockDevices(prefix: "zram") {
            if let size = read("/sys/block/\(device)/disksize"), size != "0" {
                try? "1".write(toFile: "/sys/block/\(device)/reset", atomically: false, encoding: .utf8)
            }
        }
    }

    static func mountPoints() -> [String] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            return String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
        }
    }

    static func blockDevices(prefix: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/block")) ?? []).filter { $0.hasPrefix(prefix) }
    }

    static func read(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
