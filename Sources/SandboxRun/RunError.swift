import LinuxBlock
import PrintableText

/// Why `run` refused or failed, in words for the user (the CLI prints it as one line).
public struct RunError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }

    init(_ error: SystemError) { description = error.description }

    /// The line run prints: names in it come from the image or from users, so control bytes (and every
    /// non-ASCII byte) are escaped the way `diff` escapes paths, and the message stays one line.
    public var line: String { "imgsandbox run: " + PathText.escape(description) + "\n" }
}
