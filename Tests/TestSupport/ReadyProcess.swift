import Foundation

/// A helper process that prints "ready" once it holds what a test needs (a mount namespace, a lock) and
/// then lives until its stdin closes: `init` returns once it said ready, `stop()` ends it and waits.
public final class ReadyProcess {
    public let process = Process()
    private let input = Pipe()

    /// The shell's side of the protocol: say ready, then copy stdin (nothing) until it closes.
    public static func waiting(cat: String = "cat") -> String { "echo ready && exec \(cat)" }

    public struct NotReady: Error, CustomStringConvertible {
        public let argv: [String], output: String
        public var description: String { "\(argv.joined(separator: " ")) did not say ready: \(output)" }
    }

    /// `argv[0]` is an absolute path; stderr joins stdout (so a failure's message is what `NotReady` shows).
    public init(_ argv: [String]) throws {
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let line = String(decoding: output.fileHandleForReading.readData(ofLength: 6), as: UTF8.self)
        guard line == "ready\n" else {
            stop()
            throw NotReady(argv: argv, output: line)
        }
    }

    public var pid: Int32 { process.processIdentifier }

    public func stop() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}
