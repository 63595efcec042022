/// LVM2's text configuration syntax, as its metadata uses it (lvm2 lib/config): `key = value`,
/// `name { ... }` sections, values that are "strings" (with \" and \\ escapes), integers, or `[ lists ]` of
/// those; `#` comments. Bounded: text size, nesting depth and value count are capped (the text is untrusted).
struct LVMEntry {
    let key: String
    let value: LVMValue
}

enum LVMValue {
    case integer(Int64)
    case string(String)
    case list([LVMValue])
    case section([LVMEntry])

    subscript(_ key: String) -> LVMValue? {
        guard case .section(let entries) = self else { return nil }
        return entries.first { $0.key == key }?.value
    }

    var integer: Int64? { if case .integer(let v) = self { return v } else { return nil } }
    var string: String? { if case .string(let v) = self { return v } else { return nil } }
    var list: [LVMValue]? { if case .list(let v) = self { return v } else { return nil } }
    var sections: [LVMEntry] {
        guard case .section(let entries) = self else { return [] }
        return entries.filter { if case .section = $0.value { return true } else { return false } }
    }
}

struct LVMConfigParser {
    static let maxDepth = 16
    static let maxValues = 200_000

    private let bytes: [UInt8]
    private var at = 0
    private var values = 0

    private init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// The whole text as one top-level section.
    static func parse(_ text: [UInt8]) throws(LVMError) -> LVMValue {
        var parser = LVMConfigParser(text)
        let top = try parser.body(depth: 0)
        parser.skipBlanks()
        guard parser.at >= parser.bytes.count else { throw parser.syntax("unexpected \"}\"") }
        return top
    }

    private mutating func body(depth: Int) throws(LVMError) -> LVMValue {
        guard depth <= Self.maxDepth else { throw .metadataNestedTooDeep(limit: Self.maxDepth) }
        var entries: [LVMEntry] = []
        while true {
            skipBlanks()
            guard at < bytes.count, bytes[at] != UInt8(ascii: "}") else { return .section(entries) }
            let key = try identifier()
            skipBlanks()
            guard at < bytes.count else { throw syntax("\(key) has no value") }
            if bytes[at] == UInt8(ascii: "{") {
                at += 1
                let inner = try body(depth: depth + 1)
                skipBlanks()
                guard at < bytes.count, bytes[at] == UInt8(ascii: "}") else { throw syntax("section \(key) is not closed") }
                at += 1
                entries.append(LVMEntry(key: key, value: inner))
            } else if bytes[at] == UInt8(ascii: "=") {
                at += 1
                skipBlanks()
                entries.append(LVMEntry(key: key, value: try value()))
            } else {
                throw syntax("expected \"=\" or \"{\" after \(key)")
            }
            try count()
        }
    }

    private mutating func value() throws(LVMError) -> LVMValue {
        guard at < bytes.count else { throw syntax("value missing at the end") }
        guard bytes[at] == UInt8(ascii: "[") else { return try scalar() }
        at += 1
        var items: [LVMValue] = []
        while true {
            skipBlanks()
            guard at < bytes.count else { throw syntax("list is not closed") }
            if bytes[at] == UInt8(ascii: "]") { at += 1; return .list(items) }
            if !items.isEmpty {
                guard bytes[at] == UInt8(ascii: ",") else { throw syntax("expected \",\" or \"]\" in a list") }
                at += 1
                skipBlanks()
            }
            items.append(try scalar())
            try count()
        }
    }

    private mutating func scalar() throws(LVMError) -> LVMValue {
        guard at < bytes.count else { throw syntax("value missing at the end") }
        if bytes[at] == UInt8(ascii: "\"") { return .string(try quoted()) }
        let start = at
        while at < bytes.count, isWordByte(bytes[at]) { at += 1 }
        let word = String(decoding: bytes[start..<at], as: UTF8.self)
        guard !word.isEmpty else { throw syntax("expected a value") }
        if let v = Int64(word) { return .integer(v) }
        // Floats and bare words occur in LVM configs but not in the fields read here: kept as text.
        return .string(word)
    }

    private mutating func quoted() throws(LVMError) -> String {
        at += 1
        var out: [UInt8] = []
        while at < bytes.count {
            let b = bytes[at]
            at += 1
            if b == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            if b == UInt8(ascii: "\\"), at < bytes.count { out.append(bytes[at]); at += 1; continue }
            out.append(b)
        }
        throw syntax("string is not closed")
    }

    private mutating func identifier() throws(LVMError) -> String {
        let start = at
        while at < bytes.count, isWordByte(bytes[at]) { at += 1 }
        guard at > start else { throw syntax("expected a name, found byte \(bytes[at])") }
        return String(decoding: bytes[start..<at], as: UTF8.self)
    }

    private func isWordByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
            || b == UInt8(ascii: "_") || b == UInt8(ascii: "-") || b == UInt8(ascii: ".") || b == UInt8(ascii: "+")
            || b == UInt8(ascii: "/") || b >= 0x80
    }

    private mutating func skipBlanks() {
        while at < bytes.count {
            let b = bytes[at]
            if b == UInt8(ascii: "#") {
                while at < bytes.count, bytes[at] != 0x0A { at += 1 }
            } else if b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D {
                at += 1
            } else {
                return
            }
        }
    }

    private mutating func count() throws(LVMError) {
        values += 1
        guard values <= Self.maxValues else { throw .metadataTooManyValues(limit: Self.maxValues) }
    }

    private func syntax(_ what: String) -> LVMError {
        let line = bytes[..<min(at, bytes.count)].reduce(1) { $1 == 0x0A ? $0 + 1 : $0 }
        return .metadataSyntax(line: line, what: what)
    }
}
