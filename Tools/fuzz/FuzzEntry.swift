// The libFuzzer entry for Tools/fuzz-parsers: compiled together with Sources/DiskImage/*.swift (one
// module, so internal parsers are reachable). Any trap, overflow or sanitizer report is a finding; a
// thrown DiskImageError is the expected answer to garbage.

/// The input is an image prefix. Parsed three ways: the whole table + root choice, each partition's
/// filesystem probe, and a forced partition number taken from the first byte.
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
    _ = try? ImageLayout.findRoot(in: source)
    _ = try? ImageLayout.findRoot(in: source, partitionNumber: Int(bytes[0] % 8))
    // The probes on their own, at the image start and at a sector offset, with lengths near the end.
    _ = FilesystemProbe.probe(source, offset: 0, length: source.size)
    if size > 1024 { _ = FilesystemProbe.probe(source, offset: 512, length: source.size - 512 - UInt64(bytes[1])) }
    return 0
}
