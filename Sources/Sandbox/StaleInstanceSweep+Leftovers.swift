import LinuxBlock

extension StaleInstanceSweep {
    /// A dead instance and what it still has in the kernel: what the sweep logs when it cannot release it,
    /// and what `doctor` and `status` show with the commands that would free it.
    public struct Leftover: Sendable, Equatable, Codable {
        public let pid: Int32
        public let runDirectory: String
        /// "FUSE mount /srv/x", "mount /run/imgsandbox/9/upper-1", "dm imgsandbox-9-s1", "zram3", "loop0 (imgsandbox-9:pi)".
        public let objects: [String]
        /// DeviceHolders descriptions of its zram and loop devices that something still holds.
        public let holders: [String]
        /// Shell commands that release what holds them, in order.
        public let freeingCommands: [String]
        /// Devices whose superblock the kernel keeps with no mount, fd or holder: only a reboot frees them.
        public let kernelHeld: [String]

        public var holdersDescription: String {
            holders.isEmpty ? "nothing found holding its devices" : "held: " + holders.joined(separator: "; ")
        }

        /// What a root user does about it, as one line.
        public var remedy: String {
            var parts: [String] = []
            if !freeingCommands.isEmpty { parts.append("free with: " + freeingCommands.joined(separator: " && ")) }
            if !kernelHeld.isEmpty {
                parts.append("the kernel holds \(kernelHeld.joined(separator: ", ")) with no mount left: only a reboot frees it")
            }
            parts.append("the next serve start sweeps the rest")
            return parts.joined(separator: "; ")
        }
    }

    /// The dead instances under `runRoot` (each one a sweep would release, or could not) and what they hold.
    public static func leftovers(runRoot: String = InstanceNames.defaultRunRoot, deviceMapper: DeviceMapper?,
                                 zram: Zram = Zram(), view: PidNamespaceView = .current()) -> [Leftover] {
        guard isPrivateRootDirectory(runRoot) else { return [] }
        let survey = survey(runRoot: runRoot, deviceMapper: deviceMapper)
        let dead = deadInstances(survey) { InstanceProcess.liveness(pid: $0, record: $1, view: view) }
        return dead.map { leftover(pid: $0, survey: survey, zram: zram) }
    }

    static func leftover(pid: Int32, runRoot: String, deviceMapper: DeviceMapper?, zram: Zram) -> Leftover {
        leftover(pid: pid, survey: survey(runRoot: runRoot, deviceMapper: deviceMapper), zram: zram)
    }

    static func leftover(pid: Int32, survey: Survey, zram: Zram) -> Leftover {
        let names = InstanceNames(pid: pid, runRoot: survey.runRoot)
        var objects = survey.fuseMounts(of: pid).map { "FUSE mount \($0.mountPoint)" }
        objects += survey.mounts.filter { names.holds(path: $0.mountPoint) }.map { "mount \($0.mountPoint)" }
        objects += survey.dmNames.filter { InstanceNames.owner(dmName: $0) == pid }.map { "dm \($0)" }
        let zramDevices = (survey.instances.first { $0.pid == pid }?.zramIDs ?? []).filter(zram.exists).map { "zram\($0)" }
        let loops = survey.loops.compactMap { loop -> (device: String, label: String)? in
            guard let label = loop.label, InstanceNames.owner(loopLabel: label) == pid else { return nil }
            return ("loop\(loop.index)", label)
        }
        objects += zramDevices + loops.map { "\($0.device) (\($0.label))" }
        let holders = (zramDevices + loops.map(\.device)).map { DeviceHolders.find(device: $0) }.filter { !$0.isEmpty }
        var seen = Set<String>()
        return Leftover(pid: pid, runDirectory: names.runDirectory, objects: objects, holders: holders.map(\.description),
                        freeingCommands: holders.flatMap(\.freeingCommands).filter { seen.insert($0).inserted },
                        kernelHeld: holders.filter(\.onlyKernelHolds).map(\.device))
    }
}
