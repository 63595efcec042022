import ArgumentParser
import FoundationEssentials
import LinuxBlock
import PrintableText
import Sandbox

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show every live sandbox: COW use, zram memory, free space.")

    @Argument(help: "Only the daemon serving this mountpoint (default: every running daemon).")
    var mountpoint: String?

    @Flag(help: "Print JSON: an object with a `sandboxes` array.")
    var json = false

    func run() throws {
        var instances = InstanceRecord.live()
        if let mountpoint {
            let wanted = URL(fileURLWithPath: mountpoint).standardizedFileURL.resolvingSymlinksInPath().path
            instances = instances.filter { $0.record.mountpoint == wanted }
            if instances.isEmpty { throw ValidationError("no imgsandbox daemon serves \(PathText.escape(wanted))") }
        }
        var rows: [StatusRow] = []
        var preparing: [PreparingRow] = []
        var daemons: [DaemonRow] = []
        for (names, _) in instances {
            let data = try ControlSocket.query(names.controlSocket, request: try JSONEncoder().encode(ControlRequest.status))
            let document = try StatusRow.decoder.decode(StatusRow.Document.self, from: data)
            rows += document.sandboxes
            preparing += document.preparing ?? []
            daemons += document.daemons ?? []
        }
        // Dead instances belong to no mountpoint: shown only in the machine-wide view.
        let unswept = mountpoint == nil ? StaleInstanceSweep.leftovers(deviceMapper: try? DeviceMapper()) : []
        if json {
            let document = StatusRow.Document(sandboxes: rows, preparing: preparing, unswept: unswept.isEmpty ? nil : unswept,
                                              daemons: daemons)
            print(String(decoding: try StatusRow.encoder.encode(document), as: UTF8.self))
        } else {
            print(Self.table(rows))
            for row in preparing { print(Self.line(row)) }
            for leftover in unswept { print(Self.lines(leftover).joined(separator: "\n")) }
        }
    }

    /// "dead instance 42 not swept: zram3, loop0 (imgsandbox-42:pi)" and what holds it, with its remedy;
    /// control bytes escaped (mount points are paths users name).
    static func lines(_ leftover: StaleInstanceSweep.Leftover) -> [String] {
        let objects = leftover.objects.isEmpty ? "only its run directory \(leftover.runDirectory)" : leftover.objects.joined(separator: ", ")
        return ["dead instance \(leftover.pid) not swept: \(objects)", "    \(leftover.holdersDescription)", "    \(leftover.remedy)"]
            .map { PathText.escape($0) }
    }

    /// "preparing raspios: 120 MiB of 412 MiB read (29 %), 1.1 GiB of 2.0 GiB written, 180.3 MiB/s"
    static func line(_ row: PreparingRow) -> String {
        let percent = row.compressedBytesTotal > 0 ? row.compressedBytesDone * 100 / row.compressedBytesTotal : 0
        let written = ByteSize.format(row.bytesDone) + (row.bytesTotal > 0 ? " of \(ByteSize.format(row.bytesTotal))" : "")
        return "preparing \(PathText.escape(row.image)) (\(row.format)): \(ByteSize.format(row.compressedBytesDone)) of "
            + "\(ByteSize.format(row.compressedBytesTotal)) read (\(percent) %), \(written) written, \(row.mibPerSecond) MiB/s"
    }

    static func table(_ rows: [StatusRow]) -> String {
        let header = ["IMAGE", "SANDBOX", "ENGINE", "STATE", "COW USED", "COW TOTAL", "COW MAX", "ZRAM ORIG/COMPR/MEM",
                      "FS SIZE", "FS FREE", "DATA PATH", "MOUNT"]
        let lines = rows.flatMap { row -> [[String]] in
            // Names come from image files, users and the image's fstab: escaped, so each row is one line.
            [[PathText.escape(row.image), PathText.escape(row.sandbox), row.engine, row.state, ByteSize.format(row.cowUsedBytes),
             ByteSize.format(row.cowTotalBytes), ByteSize.format(row.cowMaxBytes),
             row.cowStore == "zram"
                ? "\(ByteSize.format(row.zramOriginalBytes))/\(ByteSize.format(row.zramCompressedBytes))/\(ByteSize.format(row.zramMemoryBytes))"
                : row.cowStore,
             ByteSize.format(row.fsSizeBytes), ByteSize.format(row.fsFreeBytes), row.dataPath ?? "-", PathText.escape(row.mountPath)]] +
            // The root's line (which partition and why), then one line per partition under its sandbox's:
            // where it is, what it holds, its own COW use.
            (row.root.map { [["", "  /", "", "", "", "", "", "", "", "", "", "root: \(PathText.escape($0))"]] } ?? []) +
            row.partitions.map { p in
                ["", "  \(PathText.escape(p.mountPoint))", PathText.escape(p.filesystem), "", ByteSize.format(p.cowUsedBytes), ByteSize.format(p.cowTotalBytes),
                 "", "", "", "", "", "partition \(p.number)"]
            }
        }
        let all = [header] + lines
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { line in
            line.enumerated().map { column, text in
                column == line.count - 1 ? text : text + String(repeating: " ", count: widths[column] - text.count)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
