// The libFuzzer entry for Tools/fuzz-parsers: compiled together with Sources/DiskImage/*.swift (one
// module, so internal parsers are reachable). Any trap, overflow or sanitizer report is a finding; a
// thrown DiskImageError is the expected answer to garbage.

/// The input is an image prefix. Parsed as: the whole table + root choice (with LVM2 volumes and a root=
/// from the input), each partition's filesystem probe, the input as one LVM2 PV, as LVM2 metadata text and
/// as each kind of boot file, and a forced partition number taken from the first byte.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let source = ByteArraySource(bytes)
    if let table = try? PartitionTable.read(source) {
        for partition in table.partitions {
            precondition(partition.startByte + partition.sizeBytes <= source.size, "partition outside the image")
            _ = FilesystemProbe.probe(source, offset: partition.startByte, length: partition.sizeBytes)
        }
    }
    if let table = try? PartitionTable.read(source) {
        // LVM2 on every partition (a partition-less input is taken as one PV below), and the root choice
        // with its volumes and a root= taken from the input's own text.
        let (volumes, _) = LVM.volumes(source, table: table)
        for v in volumes {
            if let r = v.region { precondition(r.startByte + r.sizeBytes <= source.size, "volume outside the image") }
        }
        var inputs = RootChoice.Inputs(table: table) { FilesystemProbe.probe(source, offset: $0.startByte, length: $0.sizeBytes) }
        inputs.volumes = volumes
        if let root = try? BootConfiguration.root(in: Array(bytes.prefix(4096)), kind: .cmdline, file: "fuzz") {
            inputs.kernelRoots = [root]
        }
        _ = try? RootChoice.choose(inputs)
        // The same text as autoboot.txt (the A/B slot) and as every candidate's fstab (by-slot links, /dev/root).
        let text = String(decoding: bytes.prefix(4096), as: UTF8.self)
        inputs.slot = ABSlot.fromAutoboot(text, table: table, file: "fuzz") ?? .a
        inputs.fstab = { _ in Fstab.parse(text) }
        if let decision = try? RootChoice.choose(inputs) {
            _ = PartitionMounts.resolve(fstab: Fstab.parse(text), table: table, root: decision.root.partition, volumes: volumes,
                                        rootSubvolume: decision.root.subvolume, slot: decision.root.slot,
                                        probe: { FilesystemProbe.probe(source, offset: $0.startByte, length: $0.sizeBytes) },
                                        isEmptyDirectory: { _ in true })
        }
    }
    let whole = PartitionTable(scheme: .none, partitions: [Partition(number: 1, startByte: 0, sizeBytes: source.size, typeName: "fuzz")],
                               diskSize: source.size)
    _ = LVM.volumes(source, table: whole)
    _ = try? LVMConfigParser.parse(bytes)
    for kind in BootFileKind.allCases { _ = try? BootConfiguration.root(in: bytes, kind: kind, file: "fuzz") }
    _ = try? ImageLayout.findRoot(in: source)
    _ = try? ImageLayout.findRoot(in: source, partitionNumber: Int(bytes[0] % 8))
    // The probes on their own, at the image start and at a sector offset, with lengths near the end.
    _ = FilesystemProbe.probe(source, offset: 0, length: source.size)
    if size > 1024 { _ = FilesystemProbe.probe(source, offset: 512, length: source.size - 512 - UInt64(bytes[1])) }
    return 0
}
