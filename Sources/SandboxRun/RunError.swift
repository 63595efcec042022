import LinuxBlock

/// Why `run` refused or failed, in words for the user (the CLI prints it as one line).
public struct RunError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }

    init(_ error: SystemError) { description = error.description }
}
