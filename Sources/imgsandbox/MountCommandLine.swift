/// The mount(8) form `imgsandbox SOURCE MOUNTPOINT [-o OPTIONS] [-nsvf] [-t TYPE]`: mount.fuse3 runs it
/// for `-t fuse.imgsandbox`, and mount(8) runs /sbin/mount.fuse.imgsandbox (a link to this binary) the
/// same way. It becomes a `serve` command line. Each -o KEY[=VALUE] that is not one of mount's generic
/// options becomes --KEY[=VALUE] (underscores read as dashes, so allow_other is --allow-other): every
/// serve option works as -o with no list kept here, and serve's parser rejects what it does not know.
enum MountCommandLine {
    struct Translation: Equatable {
        var arguments: [String]
        /// mount -f: check the options, mount nothing.
        var fake = false
    }

    /// Options for mount(8) and fstab only (they never reach a filesystem), and those the FUSE mount
    /// already has. `defaults` stands for rw,suid,dev,exec,auto,nouser,async. suid and dev are ignored:
    /// image contents are untrusted, so the mount stays nosuid,nodev (mount.fuse3 adds both for root).
    static let ignored: Set<String> = ["defaults", "rw", "auto", "noauto", "nofail", "_netdev", "user", "nouser",
                                       "users", "owner", "group", "nosuid", "nodev", "suid", "dev", "async", "relatime"]
    /// Kernel flags the FUSE mount takes as asked (libfuse passes them to mount(2)).
    static let kernelFlags: Set<String> = ["ro", "exec", "noexec", "atime", "noatime", "sync", "dirsync"]
    /// Serve flags that are not options of a mount.
    static let internalFlags: Set<String> = ["daemon-child", "foreground"]

    /// True when argv (without the program name) is the mount form: invoked as mount.fuse.imgsandbox, or a
    /// first argument that is neither an option nor a subcommand.
    static func applies(programName: String, _ argv: [String], subcommands: Set<String>) -> Bool {
        if programName.split(separator: "/").last?.hasPrefix("mount.") == true { return true }
        guard let first = argv.first else { return false }
        return !first.hasPrefix("-") && !subcommands.contains(first)
    }

    static func translate(_ argv: [String]) throws -> Translation {
        var positionals: [String] = [], options: [String] = []
        var translation = Translation(arguments: [])
        var index = 0
        func value(of flag: String) throws -> String {
            index += 1
            guard index < argv.count else { throw ValidationFailure("mount option \(flag) needs a value") }
            return argv[index]
        }
        while index < argv.count {
            let argument = argv[index]
            switch argument {
            case "-o": options += try value(of: "-o").split(separator: ",").map(String.init)
            case "-t": _ = try value(of: "-t")  // fuse.imgsandbox: mount(8) chose us by it
            case "-n", "-s", "-v": break  // no mtab to skip; unknown options always fail; nothing more to say
            case "-f": translation.fake = true
            case "-N": throw ValidationFailure("mount -N (another mount namespace) is not supported")
            default:
                if argument.hasPrefix("-o"), argument.count > 2 {
                    options += argument.dropFirst(2).split(separator: ",").map(String.init)
                } else if argument.hasPrefix("-") {
                    throw ValidationFailure("unknown mount argument \(argument)")
                } else {
                    positionals.append(argument)
                }
            }
            index += 1
        }
        guard positionals.count == 2 else {
            throw ValidationFailure("usage: imgsandbox IMAGES_DIR MOUNTPOINT [-o OPTIONS] (as mount runs it)")
        }
        var serveArguments: [String] = []
        for option in options where !option.isEmpty {
            let key = option.split(separator: "=", maxSplits: 1).first.map(String.init) ?? option
            // mount(8)'s own `group` (a bare word) is ignored; `group=NAME` is serve's --group.
            let serveGroup = key == "group" && option.contains("=")
            if (ignored.contains(key) && !serveGroup) || key.hasPrefix("x-") || key == "comment" { continue }
            if kernelFlags.contains(option) {
                serveArguments.append("--kernel-flag=\(option)")
                continue
            }
            let name = key.replacingUnderscores()
            guard !internalFlags.contains(name) else { throw ValidationFailure("-o \(key) is not a mount option") }
            let valuePart = option.dropFirst(key.count)  // "" or "=VALUE"
            serveArguments.append("--\(name)\(valuePart)")
        }
        translation.arguments = ["serve"] + serveArguments + ["--"] + positionals
        return translation
    }
}

private extension String {
    func replacingUnderscores() -> String { String(map { $0 == "_" ? "-" : $0 }) }
}
