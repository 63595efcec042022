/// Sizes as users type them: plain bytes, or a number with K, M, G or T (powers of 1024; an optional
/// trailing "iB"/"B" is accepted, so 512M, 512MiB and 536870912 mean the same).
public enum ByteSize {
    public static func parse(_ text: String) -> UInt64? {
        var digits = Substring(text)
        for suffix in ["iB", "B"] where digits.count > suffix.count && digits.hasSuffix(suffix) {
            digits = digits.dropLast(suffix.count)
            break
        }
        var shift: UInt64 = 0
        if let last = digits.last, let unitShift = unitShifts[Character(last.uppercased())] {
            shift = unitShift
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = UInt64(digits) else { return nil }
        let (result, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : result
    }

    private static let unitShifts: [Character: UInt64] = ["K": 10, "M": 20, "G": 30, "T": 40]

    /// "512M", "1.5G" style, for logs and status.
    public static func format(_ bytes: UInt64) -> String {
        let units = ["B", "K", "M", "G", "T"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes)B" }
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? "\(Int(rounded))\(units[unit])" : "\(rounded)\(units[unit])"
    }
}
