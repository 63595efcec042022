/// The warning level of one sandbox's COW budget. It rises at 80 % and 95 % of the budget (the most the
/// store can hold, --cow-max where it grows) and at overflow, and falls only 5 points below a threshold, so a
/// usage that hovers at one does not log at every poll.
public struct CowAlarm: Sendable, Equatable {
    public enum Level: Int, Sendable, Comparable, CustomStringConvertible {
        case normal = 0, high = 80, critical = 95, overflowed = 100

        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var description: String {
            switch self {
            case .normal: "below 80%"
            case .high: "80%"
            case .critical: "95%"
            case .overflowed: "overflowed"
            }
        }
    }

    public private(set) var level: Level = .normal

    public init() {}

    /// Percent of the budget in use, 0...100.
    public static func percent(_ usage: SandboxUsage) -> Double {
        let budget = max(usage.cowMaxBytes, usage.cowTotalBytes)
        guard budget > 0 else { return 0 }
        return min(100, Double(usage.cowUsedBytes) * 100 / Double(budget))
    }

    /// Takes a new reading; returns the level when it rose (the caller logs it), nil otherwise.
    public mutating func update(_ usage: SandboxUsage) -> Level? {
        let next: Level
        if usage.state == .overflowed {
            next = .overflowed
        } else {
            let percent = Self.percent(usage)
            let reached: Level = percent >= 95 ? .critical : percent >= 80 ? .high : .normal
            if reached >= level || level == .overflowed {
                next = reached
            } else {
                // Falling: only past the hysteresis margin of the current threshold.
                next = percent < Double(level.rawValue) - 5 ? reached : level
            }
        }
        defer { level = next }
        return next > level ? next : nil
    }
}
