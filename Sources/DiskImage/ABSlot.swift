/// Which slot of an A/B image is active. rpi-image-gen's A/B layouts name their GPT partitions `boot_a`,
/// `boot_b`, `system_a`, `system_b`, and the root's fstab mounts `/dev/disk/by-slot/active/system` at `/`
/// (a udev rule's link to the booted slot's partition). The Pi firmware boots the partition that
/// autoboot.txt's `boot_partition=` names (its `[tryboot]` section is a one-time trial, not the slot).
public struct ABSlot: Sendable, Equatable {
    /// "a" or "b", as the partition names end.
    public let letter: String
    /// One line: "slot A: boot_partition=2 (boot_a) in autoboot.txt of partition 1".
    public let reason: String

    public static let a = ABSlot(letter: "a", reason: "slot A: nothing names a slot")

    public init(letter: String, reason: String) {
        self.letter = letter
        self.reason = reason
    }

    /// The slot autoboot.txt selects: the last `boot_partition=N` outside any section or in `[all]`, when
    /// partition N's GPT name ends in `_a` or `_b`; nil otherwise (another layout's autoboot.txt).
    public static func fromAutoboot(_ text: String, table: PartitionTable, file: String) -> ABSlot? {
        var section = "all", number: Int?
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            var trimmed = line.drop { $0 == " " || $0 == "\t" }
            while let last = trimmed.last, last == " " || last == "\t" { trimmed = trimmed.dropLast() }
            if trimmed.hasPrefix("[") {
                section = String(trimmed.dropFirst().prefix { $0 != "]" }).lowercased()
                continue
            }
            guard section == "all", trimmed.hasPrefix("boot_partition=") else { continue }
            let digits = trimmed.dropFirst("boot_partition=".count)
            if digits.count <= 3, let n = Int(digits) { number = n }
        }
        guard let number, let partition = table.partitions.first(where: { $0.number == number }),
              let name = partition.gptName, let letter = slotLetter(name) else { return nil }
        return ABSlot(letter: letter, reason: "slot \(letter.uppercased()): boot_partition=\(number) (\(name)) in \(file)")
    }

    /// The partition `/dev/disk/by-slot/{active,other}/NAME` is: GPT name `NAME_a` or `NAME_b`.
    func partition(_ name: String, active: Bool, in partitions: [Partition]) -> Partition? {
        let letter = active ? letter : (letter == "a" ? "b" : "a")
        return partitions.first { $0.gptName == "\(name)_\(letter)" }
    }

    static func slotLetter(_ gptName: String) -> String? {
        for letter in ["a", "b"] where gptName.hasSuffix("_\(letter)") { return letter }
        return nil
    }
}
