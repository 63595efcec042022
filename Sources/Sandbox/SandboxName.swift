/// Sandbox names become directory names, mount paths and device-mapper UUIDs, so they are kept to a
/// portable set: ASCII letters, digits, '.', '_', '-', '+', '@'; 1-64 bytes; not starting with '.' or '-'.
public enum SandboxName {
    public static let maxLength = 64

    public enum Problem: Equatable, Sendable, CustomStringConvertible {
        case empty, tooLong(Int), leadingDotOrDash, badCharacter(UInt8)

        public var description: String {
            switch self {
            case .empty: "the name is empty"
            case .tooLong(let n): "the name is \(n) bytes long, at most \(SandboxName.maxLength) are allowed"
            case .leadingDotOrDash: "the name may not start with '.' or '-'"
            case .badCharacter(let byte):
                "the name contains byte 0x\(String(byte, radix: 16)); allowed are ASCII letters, digits and . _ - + @"
            }
        }
    }

    public static func problem(with name: String) -> Problem? {
        let bytes = Array(name.utf8)
        guard let first = bytes.first else { return .empty }
        guard bytes.count <= maxLength else { return .tooLong(bytes.count) }
        if first == UInt8(ascii: ".") || first == UInt8(ascii: "-") { return .leadingDotOrDash }
        if let bad = bytes.first(where: { !isAllowed($0) }) { return .badCharacter(bad) }
        return nil
    }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "@"):
            true
        default:
            false
        }
    }
}
