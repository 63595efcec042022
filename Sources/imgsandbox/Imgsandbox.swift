import ArgumentParser

@main
struct Imgsandbox: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imgsandbox",
        abstract: "Throwaway copy-on-write sandboxes of disk images, as directories.",
        subcommands: [Serve.self, Status.self, Doctor.self, Diff.self]
    )
}
