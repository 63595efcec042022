/// Little-endian field access on byte arrays; callers check bounds first (structures have fixed sizes).
extension Array where Element == UInt8 {
    @inline(__always) func le16(_ at: Int) -> UInt16 { UInt16(self[at]) | UInt16(self[at + 1]) << 8 }
    @inline(__always) func le32(_ at: Int) -> UInt32 { UInt32(le16(at)) | UInt32(le16(at + 2)) << 16 }

    mutating func setLE16(_ at: Int, _ value: UInt16) {
        self[at] = UInt8(truncatingIfNeeded: value)
        self[at + 1] = UInt8(truncatingIfNeeded: value >> 8)
    }

    mutating func setLE32(_ at: Int, _ value: UInt32) {
        setLE16(at, UInt16(truncatingIfNeeded: value))
        setLE16(at + 2, UInt16(truncatingIfNeeded: value >> 16))
    }
}

extension Array {
    /// withUnsafeBytes keeping the typed error (the standard one rethrows `any Error`).
    func withBytes<T>(_ body: (UnsafeRawBufferPointer) throws(FATError) -> T) throws(FATError) -> T {
        var result: Result<T, FATError>?
        withUnsafeBytes { b in result = Result { () throws(FATError) -> T in try body(b) } }
        return try result!.get()
    }

    mutating func withMutableBytes<T>(_ body: (UnsafeMutableRawBufferPointer) throws(FATError) -> T) throws(FATError) -> T {
        var result: Result<T, FATError>?
        withUnsafeMutableBytes { b in result = Result { () throws(FATError) -> T in try body(b) } }
        return try result!.get()
    }
}
