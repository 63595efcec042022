import Testing
@testable import DiskImage

@Test("CRC32 matches the IEEE check values", arguments: [
    ("123456789", UInt32(0xCBF4_3926)),
    ("", UInt32(0)),
    ("The quick brown fox jumps over the lazy dog", UInt32(0x414F_A339)),
])
func crc32KnownValues(input: String, expected: UInt32) {
    #expect(CRC32.checksum(Array(input.utf8)) == expected)
}
