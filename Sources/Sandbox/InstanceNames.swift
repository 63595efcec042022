/// The one owner of the names a serve instance gives what it makes. Kernel objects carry its pid:
/// - the FUSE mount: fsname `imgsandbox-PID`, type `fuse.imgsandbox`
/// - dm devices: `imgsandbox-PID-iN-base` (image N), `imgsandbox-PID-sN` (sandbox N), `imgsandbox-PID-sN-cow`,
///   `imgsandbox-PID-rN-base` (read-only view N of a partition in several ranges)
/// - loop devices: lo_file_name `imgsandbox-PID:IMAGE` (and `imgsandbox-PID:sN-cow IMAGE/SANDBOX`)
/// and its records and hidden mounts live in its run directory RUNROOT/PID (RUNROOT is /run/imgsandbox).
/// The engines build these names and the crash sweep parses them here, so the two cannot drift apart.
public struct InstanceNames: Sendable, Hashable {
    public static let prefix = "imgsandbox"
    /// libfuse names the mount's type after argv[0]: `fuse.` + this.
    public static let fuseSubtype = "imgsandbox"
    public static let fuseType = "fuse.\(fuseSubtype)"
    public static let defaultRunRoot = "/run/imgsandbox"
    /// The background daemons' log, shared by every instance.
    public static let logPath = "\(defaultRunRoot)/serve.log"
    /// Source of the overlay and tmpfs mounts (no pid: they are found by their place under the run directory).
    public static let mountSource = "imgsandbox"
    /// The kernel keeps at most 128 bytes of a dm UUID (DM_UUID_LEN 129 with its NUL).
    public static let dmUUIDLimit = 128

    public let pid: Int32
    public let runRoot: String

    public init(pid: Int32, runRoot: String = InstanceNames.defaultRunRoot) {
        self.pid = pid
        self.runRoot = runRoot
    }

    // MARK: kernel objects

    /// The FUSE mount's fsname (its "source" in mountinfo).
    public var fsName: String { "\(Self.prefix)-\(pid)" }
    /// The read-only base device of image `serial` (dm engine).
    public func baseDevice(image serial: UInt64) -> String { "\(fsName)-i\(serial)-base" }
    /// Read-only view `serial` of a partition in several ranges of its image (dm engine; removed like a base).
    public func readOnlyDevice(view serial: UInt64) -> String { "\(fsName)-r\(serial)-base" }
    /// The snapshot of sandbox `serial` (dm engine).
    public func snapshotDevice(sandbox serial: UInt64) -> String { "\(fsName)-s\(serial)" }
    /// The growable COW store of sandbox `serial` (dm engine, --cow-max).
    public func cowDevice(sandbox serial: UInt64) -> String { "\(snapshotDevice(sandbox: serial))-cow" }
    /// The read-only loop device of an image.
    public func loopLabel(image: String) -> String { "\(fsName):\(image)" }
    /// The 512-byte-sector loop device over sandbox `serial`'s COW store.
    public func cowLoopLabel(sandbox serial: UInt64, image: String, name: String) -> String {
        "\(fsName):s\(serial)-cow \(image)/\(name)"
    }

    /// A dm UUID: the device's name and what it serves (informative only), cut to the kernel's 128 bytes on
    /// a UTF-8 boundary (image names may be long and non-ASCII).
    public static func dmUUID(_ name: String, _ details: String...) -> String {
        utf8Prefix(([name] + details).joined(separator: "-"), maxBytes: dmUUIDLimit)
    }

    /// The longest prefix of `text` of at most `maxBytes` UTF-8 bytes that ends on a character boundary.
    public static func utf8Prefix(_ text: String, maxBytes: Int) -> String {
        guard text.utf8.count > maxBytes else { return text }
        var result = ""
        var bytes = 0
        for scalar in text.unicodeScalars {
            let size = String(scalar).utf8.count
            guard bytes + size <= maxBytes else { break }
            result.unicodeScalars.append(scalar)
            bytes += size
        }
        return result
    }

    // MARK: run files

    /// RUNROOT/PID: records, control socket and hidden mounts of this instance (mode 0700).
    public var runDirectory: String { "\(runRoot)/\(pid)" }
    /// "PID STARTTIME", written before the instance makes any kernel object.
    public var processRecord: String { "\(runDirectory)/process" }
    /// One empty file per zram device the instance holds (see ZramAllocator).
    public var zramLedger: String { "\(runDirectory)/zram" }
    /// Where `status` asks the daemon (root only).
    public var controlSocket: String { "\(runDirectory)/control.sock" }
    /// Which mountpoint and images the instance serves, for `status`.
    public var instanceRecord: String { "\(runDirectory)/instance.json" }
    /// Holds the hidden sandbox mounts, outside the FUSE tree.
    public var hiddenMounts: String { "\(runDirectory)/mnt" }
    public func hiddenMounts(image: String) -> String { "\(hiddenMounts)/\(image)" }
    public func hiddenMount(image: String, sandbox: String) -> String { "\(hiddenMounts)/\(image)/\(sandbox)" }
    /// The overlay engine's read-only mount of image `serial`.
    /// A sandbox's other Linux partition, beside its root (sandbox names never start with ".").
    /// `variant` > 1: a further btrfs subvolume of that partition.
    public func partitionMount(image: String, sandbox: String, number: Int, variant: Int = 1) -> String {
        "\(hiddenMounts)/\(image)/.p\(number)\(variant > 1 ? ".\(variant)" : "")-\(sandbox)"
    }
    /// `pristine/`: read-only mounts of the image's partitions, RUNDIR/pristine/IMAGE/{root,pN}.
    public var pristineMounts: String { "\(runDirectory)/pristine" }
    public func pristineMounts(image: String) -> String { "\(pristineMounts)/\(image)" }
    public func pristineMount(image: String, partition number: Int) -> String {
        "\(pristineMounts(image: image))/\(number == 0 ? "root" : "p\(number)")"
    }
    public func lowerMount(image serial: UInt64) -> String { "\(runDirectory)/lower-\(serial)" }
    /// The overlay engine's COW store mount of sandbox `serial`.
    public func upperMount(sandbox serial: UInt64) -> String { "\(runDirectory)/upper-\(serial)" }
    /// `imgsandbox save`: where the output's partition is mounted, and its loop device's label.
    public func saveMount(save serial: UInt64) -> String { "\(runDirectory)/save-\(serial)" }
    public func saveLoopLabel(save serial: UInt64) -> String { "\(fsName):save-\(serial)" }
    /// Whether `path` lies inside this instance's run directory.
    public func holds(path: String) -> Bool { path.hasPrefix(runDirectory + "/") }

    /// Serialises crash sweeps of every instance under `runRoot`.
    public static func sweepLock(runRoot: String) -> String { "\(runRoot)/sweep.lock" }

    // MARK: parsing: which instance made an object

    /// "imgsandbox-123" -> 123.
    public static func owner(fsName: String) -> Int32? { pid(in: fsName, terminator: nil) }
    /// "imgsandbox-123-s4" -> 123.
    public static func owner(dmName: String) -> Int32? { pid(in: dmName, terminator: "-") }
    /// "imgsandbox-123:pi" -> 123.
    public static func owner(loopLabel: String) -> Int32? { pid(in: loopLabel, terminator: ":") }
    /// A run root entry "123" -> 123 (only the canonical spelling: "0123" is someone else's).
    public static func owner(runEntry name: String) -> Int32? {
        guard let pid = Int32(name), pid > 0, String(pid) == name else { return nil }
        return pid
    }

    /// What a dm device of ours is, by its name: removal goes snapshots, COW stores, then bases.
    public enum DeviceRole: Int, Comparable, Sendable {
        case snapshot, cowStore, base
        public init(dmName: String) {
            self = dmName.hasSuffix("-base") ? .base : dmName.hasSuffix("-cow") ? .cowStore : .snapshot
        }
        public static func < (a: DeviceRole, b: DeviceRole) -> Bool { a.rawValue < b.rawValue }
    }

    /// `prefix-DIGITS` then the terminator (nil: the end). Only a positive Int32 in plain ASCII digits counts.
    static func pid(in text: String, terminator: Character?) -> Int32? {
        let head = prefix + "-"
        guard text.hasPrefix(head) else { return nil }
        let rest = text.dropFirst(head.count)
        let digits: Substring
        if let terminator {
            guard let end = rest.firstIndex(of: terminator) else { return nil }
            digits = rest[..<end]
        } else {
            digits = rest
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let pid = Int32(digits), pid > 0 else {
            return nil
        }
        return pid
    }
}
