/// extlinux.conf (syslinux syntax, keywords case-insensitive): `DEFAULT name` picks a `LABEL`; else the label
/// marked `MENU DEFAULT`; else the first. A label without APPEND uses a global one (before any LABEL).
enum Extlinux {
    static func defaultAppend(_ text: String) -> String? {
        var defaultName: String?, globalAppend: String?
        var labels: [(name: String, append: String?, menuDefault: Bool)] = []
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            let keyword = trimmed.prefix { $0 != " " && $0 != "\t" }.lowercased()
            let rest = String(trimmed.dropFirst(keyword.count).drop { $0 == " " || $0 == "\t" })
            switch keyword {
            case "default": defaultName = rest
            case "label": labels.append((rest, nil, false))
            case "append":
                if labels.isEmpty { globalAppend = rest } else { labels[labels.count - 1].append = rest }
            case "menu" where rest.lowercased() == "default":
                if !labels.isEmpty { labels[labels.count - 1].menuDefault = true }
            default: break
            }
        }
        let chosen = labels.first { $0.name == defaultName } ?? labels.first { $0.menuDefault } ?? labels.first
        return chosen?.append ?? globalAppend
    }
}

/// grub.cfg, kept simple: `set default=N` or `="title"` picks a top-level menuentry (else the first); its
/// `linux`/`linux16`/`linuxefi` line gives the arguments after the kernel path. Submenus are not entered.
enum Grub {
    static func defaultLinuxArguments(_ text: String) -> [String]? {
        var defaultValue: String?
        var entries: [(title: String, linux: [String]?)] = []
        var depth = 0, inEntry = false
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let words = KernelCommandLine.split(String(line))
            guard let first = words.first, !first.hasPrefix("#") else { continue }
            if depth == 0, first == "set", words.count >= 2, words[1].hasPrefix("default=") {
                defaultValue = String(words[1].dropFirst(8))
            }
            if depth == 0, first == "menuentry" {
                entries.append((words.count > 1 ? words[1] : "", nil))
                inEntry = true
            }
            if inEntry, depth == 1, ["linux", "linux16", "linuxefi"].contains(first), entries.last?.linux == nil {
                entries[entries.count - 1].linux = Array(words.dropFirst(2))
            }
            // Braces only count as words of their own or at a word's end, as grub.cfg writes them.
            for w in words {
                if w == "{" || w.hasSuffix("{") && !w.hasPrefix("$") { depth += 1 }
                if w == "}" { depth = max(0, depth - 1) }
            }
            if depth == 0 { inEntry = false }
        }
        let chosen: (title: String, linux: [String]?)?
        if let value = defaultValue, let index = Int(value), entries.indices.contains(index) {
            chosen = entries[index]
        } else if let value = defaultValue, let entry = entries.first(where: { $0.title == value }) {
            chosen = entry
        } else {
            chosen = entries.first
        }
        return chosen?.linux
    }
}

/// U-Boot environment files (`key=value` lines): Armbian's `rootdev=` and `rootfstype=`, a plain `root=`, or a
/// kernel command line in a variable (`bootargs=console=ttyS0 root=/dev/mmcblk0p2 rw`).
enum EnvFile {
    static func root(_ text: String, file: String) -> KernelRoot? {
        var values: [String: String] = [:], lineWithRoot: [String]?
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            guard !trimmed.hasPrefix("#"), let eq = trimmed.firstIndex(of: "=") else { continue }
            let key = String(trimmed[..<eq]), value = String(trimmed[trimmed.index(after: eq)...])
            if values[key] == nil { values[key] = value }
            if lineWithRoot == nil, key != "root", key != "rootdev" {
                let words = KernelCommandLine.split(value)
                if words.contains(where: { $0.hasPrefix("root=") }) { lineWithRoot = words }
            }
        }
        for key in ["rootdev", "root"] {
            if let value = values[key].map(KernelCommandLine.split)?.first, !value.isEmpty {
                return KernelRoot(value: value, rootflags: values["rootflags"], filesystemType: values["rootfstype"], file: file)
            }
        }
        return lineWithRoot.flatMap { KernelCommandLine.root($0, file: file) }
    }

    /// balenaOS's `resin_root_part=N`: partition N of the boot disk, N in hex (U-Boot's `part` numbers; a
    /// `0x` prefix allowed), the last line winning as U-Boot's `env import` overwrites.
    static func balenaRoot(_ text: String, file: String) -> KernelRoot? {
        var number: Int?
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            guard trimmed.hasPrefix("resin_root_part=") else { continue }
            var value = trimmed.dropFirst("resin_root_part=".count)
            while let last = value.last, last == " " || last == "\t" { value = value.dropLast() }
            if value.lowercased().hasPrefix("0x") { value = value.dropFirst(2) }
            guard !value.isEmpty, value.count <= 3, let n = Int(value, radix: 16), n > 0 else { number = nil; continue }
            number = n
        }
        return number.map { KernelRoot(value: "/dev/mmcblk0p\($0)", file: "\(file) (resin_root_part)") }
    }
}

/// A Boot Loader Specification entry: `key value` lines; the kernel command line is every `options` line
/// joined (the specification allows several).
public enum LoaderEntry {
    static func options(_ text: String) -> [String]? {
        var words: [String] = []
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            let key = trimmed.prefix { $0 != " " && $0 != "\t" }
            if key == "options" { words += KernelCommandLine.split(String(trimmed.dropFirst(key.count))) }
        }
        return words.isEmpty ? nil : words
    }

    /// The names of a loader/entries directory worth reading (`*.conf`, no hidden ones), newest first as
    /// boot loaders sort them: by version, digit runs compared as numbers, descending; at most `limit`.
    public static func order(_ names: [String], limit: Int = 64) -> [String] {
        let entries = names.filter { $0.hasSuffix(".conf") && !$0.hasPrefix(".") }
        return Array(entries.sorted { versionPrecedes($1, $0) }.prefix(limit))
    }

    /// "6.5.10" after "6.5.9": runs of digits compare as numbers, the rest bytewise.
    static func versionPrecedes(_ a: String, _ b: String) -> Bool {
        func runs(_ s: String) -> [(digits: Bool, text: Substring)] {
            var out: [(Bool, Substring)] = []
            var rest = Substring(s)
            while let first = rest.first {
                let isDigit = first.isASCII && first.isNumber
                let run = rest.prefix { ($0.isASCII && $0.isNumber) == isDigit }
                out.append((isDigit, run))
                rest = rest.dropFirst(run.count)
            }
            return out
        }
        for (x, y) in zip(runs(a), runs(b)) where x.text != y.text {
            if x.digits, y.digits {
                let xs = x.text.drop { $0 == "0" }, ys = y.text.drop { $0 == "0" }
                if xs.count != ys.count { return xs.count < ys.count }
                if xs != ys { return xs < ys }
                continue
            }
            return x.text < y.text
        }
        return runs(a).count < runs(b).count
    }
}
