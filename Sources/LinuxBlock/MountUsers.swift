import Glibc

/// Who uses a filesystem in ways DeviceHolders' mount table and fd scan miss: a process mapping one of its
/// files (a FUSE passthrough mapping outlives its FUSE file, so the FUSE layer counts nothing open), and
/// copies of its mounts in other mount namespaces seen from each namespace's root (a chrooted holder's own
/// /proc/PID/mountinfo hides them). For the log line of a release that answers EBUSY.
public enum MountUsers {
    /// "pid 41 (fsx) maps a file of it": /proc/PID/maps gives major:minor in hex. At most 8.
    public static func mapping(_ number: DeviceNumber, procRoot: String = "/proc") -> [String] {
        let field = " " + hex(number.major) + ":" + hex(number.minor) + " "
        var found: [String] = []
        for pid in FileIO.list(procRoot).compactMap(Int32.init).sorted() where found.count < 8 {
            guard let maps = try? FileIO.readText("\(procRoot)/\(pid)/maps"), maps.contains(field) else { continue }
            found.append("pid \(pid) (\((try? FileIO.readValue("\(procRoot)/\(pid)/comm")) ?? "?")) maps a file of it")
        }
        return found
    }

    /// "/run/x in mnt:[4026532200] of pid 12 (busybox)" for each mount of `number` in another namespace.
    public static func copies(_ number: DeviceNumber, procRoot: String = "/proc") -> [String] {
        MountCopies.mountsInOtherNamespaces(procRoot: procRoot).flatMap { namespace in
            namespace.entries.filter { $0.deviceNumber == number }
                .map { "\($0.mountPoint) in \(namespace.namespace) of pid \(namespace.pid) (\(namespace.command))" }
        }
    }

    /// What holds block device `device` ("zram1"): DeviceHolders, plus the copies and mappings above.
    public static func describe(device: String, sysRoot: String = "/sys") -> String {
        var text = DeviceHolders.find(device: device).description
        guard let number = (try? FileIO.readValue("\(sysRoot)/class/block/\(device)/dev")).flatMap(DeviceNumber.init) else {
            return text
        }
        let copies = copies(number), mapped = mapping(number)
        if !copies.isEmpty { text += "; seen from their namespaces' roots: mounted at " + copies.joined(separator: ", ") }
        if !mapped.isEmpty { text += "; " + mapped.joined(separator: "; ") }
        return text
    }

    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return digits.count >= 2 ? digits : "0" + digits
    }
}

extension Mount {
    /// `unmount` whose EBUSY names the processes that map a file of the filesystem, or says none does.
    public static func unmountNamingHolders(_ target: String) throws(SystemError) {
        var info = stat()
        let device = stat(target, &info) == 0 ? DeviceNumber(rawValue: UInt64(info.st_dev)) : nil
        do {
            try unmount(target)
        } catch where error.errno == EBUSY {
            let users = device.map { MountUsers.mapping($0) } ?? []
            let held = users.isEmpty ? "no process maps a file of it" : users.joined(separator: "; ")
            throw SystemError(error.operation, "\(target) (\(held))", errno: EBUSY)
        }
    }
}
