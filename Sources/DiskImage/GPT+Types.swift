extension GPT {
    /// GUIDs are stored with their first three fields little-endian.
    static func mixedEndianGUID(_ b: [UInt8]) -> String {
        guard b.count == 16 else { return "" }
        let ordered = [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]] + Array(b[8..<16])
        return formatUUID(ordered)
    }

    /// Partition names are UTF-16LE, NUL-terminated; invalid sequences are replaced.
    static func name(_ raw: [UInt8]) -> String? {
        var units: [UInt16] = []
        var i = 0
        while i + 1 < raw.count {
            let u = UInt16(raw[i]) | UInt16(raw[i + 1]) << 8
            if u == 0 { break }
            units.append(u)
            i += 2
        }
        return units.isEmpty ? nil : String(decoding: units, as: UTF16.self)
    }

    static func typeName(_ guid: String) -> String {
        if let known = typeNames[guid] { return "\(known) (GPT)" }
        return "Unknown (GPT \(guid))"
    }

    static let linuxFilesystemGUID = "0fc63daf-8483-4772-8e79-3d69d8477de4"
    static let efiSystemGUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"

    private static let typeNames: [String: String] = [
        linuxFilesystemGUID: "Linux filesystem",
        efiSystemGUID: "EFI System",
        "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
        "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
        "44479540-f297-41b2-9af7-d131d5f0458a": "Linux root (x86)",
        "b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (ARM-64)",
        "69dad710-2ce4-4e3c-b16c-21a1d49abed3": "Linux root (ARM-32)",
        "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
        "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
        "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
        "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    ]
}
