/// Random-access bytes of an image. `read` returns exactly `count` bytes or throws; a range outside
/// `0..<size` is `readBeyondEnd`, so a structure pointing out of the image becomes an error.
public protocol ByteSource: Sendable {
    var size: UInt64 { get }
    func read(at offset: UInt64, count: Int) throws(DiskImageError) -> [UInt8]
}

extension ByteSource {
    /// Throws unless `offset..<offset+count` lies inside the source (overflow-safe).
    func checkRange(_ offset: UInt64, _ count: Int) throws(DiskImageError) {
        guard count >= 0 else { throw .readBeyondEnd(offset: offset, count: count, size: size) }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= size else {
            throw .readBeyondEnd(offset: offset, count: count, size: size)
        }
    }
}

/// An in-memory image (tests, fuzzing).
public struct ByteArraySource: ByteSource {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var size: UInt64 { UInt64(bytes.count) }

    public func read(at offset: UInt64, count: Int) throws(DiskImageError) -> [UInt8] {
        try checkRange(offset, count)
        let start = Int(offset)
        return Array(bytes[start..<start + count])
    }
}
