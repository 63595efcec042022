/// The status line of a dm-snapshot target: "used/total metadata", or "Invalid" (the COW store filled or
/// failed: every I/O errors), "Overflow", or a merge state ("Merge failed").
public enum SnapshotStatus: Sendable, Equatable {
    case active(usedSectors: UInt64, totalSectors: UInt64, metadataSectors: UInt64)
    case invalid
    case overflow
    case merging(String)

    /// Parses what DM_TABLE_STATUS reports for a snapshot target; nil for anything unrecognised ("Unknown").
    public init?(statusLine: String) {
        let text = FileIO.trimmed(statusLine)
        switch text {
        case "Invalid": self = .invalid
        case "Overflow": self = .overflow
        default:
            if text.hasPrefix("Merge") {
                self = .merging(text)
                return
            }
            let fields = text.split(separator: " ")
            guard fields.count == 2 else { return nil }
            let fraction = fields[0].split(separator: "/", omittingEmptySubsequences: false)
            guard fraction.count == 2, let used = UInt64(fraction[0]), let total = UInt64(fraction[1]),
                  let metadata = UInt64(fields[1]) else { return nil }
            self = .active(usedSectors: used, totalSectors: total, metadataSectors: metadata)
        }
    }
}
