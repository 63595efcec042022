/// Paths as text: printable ASCII except the backslash as is, every other byte as \xNN (so a name with a
/// newline stays on its line, and the text maps back to the exact bytes).
public enum PathText {
    /// A name or path that came from outside (an image, a user, a file name) as one safe line for a terminal
    /// or a log: status, error messages, diff and run print names only through this.
    public static func escape(_ text: some StringProtocol) -> String { escape(Array(text.utf8)) }

    public static func escape(_ bytes: [UInt8]) -> String {
        var text = ""
        text.reserveCapacity(bytes.count)
        for byte in bytes {
            if byte >= 0x20, byte < 0x7f, byte != UInt8(ascii: "\\") {
                text.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                text += "\\x" + String(byte, radix: 16, uppercase: false).leftPadded(to: 2)
            }
        }
        return text
    }

    public static func unescape(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let byte = bytes.popFirst() {
            guard byte == UInt8(ascii: "\\") else { out.append(byte); continue }
            guard bytes.count >= 3, bytes.removeFirst() == UInt8(ascii: "x"),
                  let value = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else { return nil }
            bytes.removeFirst(2)
            out.append(value)
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
