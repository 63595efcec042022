import ArgumentParser
import Glibc

@main
struct Imgsandbox: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imgsandbox",
        abstract: "Throwaway copy-on-write sandboxes of disk images, as directories.",
        discussion: "As mount runs it: imgsandbox IMAGES_DIR MOUNTPOINT -o OPTIONS (each serve option as KEY=VALUE or KEY).",
        version: Version.text,
        subcommands: [Serve.self, Status.self, Doctor.self, Diff.self, Save.self, Run.self]
    )

    /// The arguments after the program name once the mount form is translated; `serve` re-runs itself
    /// with these to start the background daemon.
    // nonisolated(unsafe) proof: written only in main() before any other thread exists, read after.
    nonisolated(unsafe) static var arguments = Array(CommandLine.arguments.dropFirst())

    static func main() {
        // mount(8) runs its helpers with PATH removed; serve runs mkfs.ext4 and modprobe by name.
        if (getenv("PATH").map { String(cString: $0).isEmpty } ?? true) {
            setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1)
        }
        let subcommands = Set(configuration.subcommands.map { $0._commandName } + ["help"])
        if MountCommandLine.applies(programName: CommandLine.arguments[0], arguments, subcommands: subcommands) {
            do {
                let translation = try MountCommandLine.translate(arguments)
                arguments = translation.arguments
                if translation.fake {
                    // Parse only: mount -f checks the line and mounts nothing.
                    _ = try parseAsRoot(arguments)
                    return
                }
            } catch {
                exit(withError: error)
            }
        }
        main(arguments)
    }
}
