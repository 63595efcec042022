import Testing
@testable import FATFS

@Suite struct FATNameTests {
    func alias(_ name: String, taken: Set<String> = []) throws -> (String, Bool) {
        let units = try FATName.validate(name)
        let a = try ShortName.alias(for: units) { taken.contains(String(decoding: Array($0), as: UTF8.self)) }
        return (String(decoding: a.bytes, as: UTF8.self), a.needsLongName)
    }

    /// Linux vfat (shortname=mixed) gives these aliases.
    @Test func aliasesFollowLinuxVfat() throws {
        #expect(try alias("UPPER.TXT") == ("UPPER   TXT", false))
        #expect(try alias("config.txt") == ("CONFIG  TXT", true))
        #expect(try alias("MiXeD.Txt") == ("MIXED   TXT", true))
        #expect(try alias("longfilename.txt") == ("LONGFI~1TXT", true))
        #expect(try alias("longfilename.txt", taken: ["LONGFI~1TXT"]) == ("LONGFI~2TXT", true))
        #expect(try alias(".bashrc") == ("BASHRC~1   ", true))
        #expect(try alias("a.b.c") == ("AB~1    C  ", true))
        #expect(try alias("x y.txt") == ("XY~1    TXT", true))
        #expect(try alias("a+b.tar.gz") == ("A_BTAR~1GZ ", true))
        #expect(try alias("extension.toolong") == ("EXTENS~1TOO", true))
        #expect(try alias("ünï.bin") == ("_N_~1   BIN", true))
        let nine = Set((1...9).map { "LONGFI~\($0)TXT" })
        let hashed = try alias("longfilename.txt", taken: nine)
        #expect(hashed.0.hasPrefix("LO") && hashed.0.dropFirst(6).hasPrefix("~") && hashed.0.hasSuffix("TXT"), "\(hashed.0)")
        #expect(throws: FATError.self) { _ = try alias("UPPER.TXT", taken: ["UPPER   TXT"]) }
    }

    @Test func shortNamesShowWithTheirCaseBits() {
        let raw = Array("CONFIG  TXT".utf8)[...]
        #expect(ShortName.display(raw, caseFlags: 0) == "CONFIG.TXT")
        #expect(ShortName.display(raw, caseFlags: 0x18) == "config.txt")
        #expect(ShortName.display(raw, caseFlags: 0x10) == "CONFIG.txt")
        #expect(ShortName.display(Array("\u{05}BC        ".utf8)[...], caseFlags: 0) == "σBC", "0x05 stands for 0xE5")
        #expect(ShortName.display(Array("NOEXT      ".utf8)[...], caseFlags: 0) == "NOEXT")
    }

    @Test func longNameEntriesRoundTrip() {
        let name = Array("A long file name with spaces.txt".utf16)
        let sum = LongName.checksum(Array("ALONGF~1TXT".utf8)[...])
        let entries = LongName.entries(for: name, checksum: sum)
        #expect(entries.count == 3)
        #expect(entries[0][0] == 0x43 && entries[2][0] == 0x01)
        var dir = FATDirectory(cluster: 5, extents: [(0, 4096)], bytes: [UInt8](repeating: 0, count: 4096))
        let short = FATShortEntry.new(name: Array("ALONGF~1TXT".utf8), attributes: 0x20, cluster: 0, at: FATTime(seconds: 400_000_000))
        dir.bytes.replaceSubrange(0..<128, with: entries.joined() + short.raw)
        #expect(dir.items().map(\.name) == ["A long file name with spaces.txt"])
        dir.bytes[13] ^= 1   // a wrong checksum: the 8.3 name shows
        #expect(dir.items().map(\.name) == ["ALONGF~1.TXT"])
    }

    @Test(arguments: [Int64(315_532_800), 1_000_000_000, 1_614_861_296, 4_354_819_198, 951_782_400 /* 2000-02-29 */])
    func timestampsRoundTrip(seconds: Int64) {
        let t = FATTime(seconds: seconds, nanoseconds: 990_000_000)
        let e = FATTimestamp.encode(t)
        #expect(FATTimestamp.decode(date: e.date, time: e.time) == FATTime(seconds: seconds & ~1))
        #expect(FATTimestamp.decode(date: e.date, time: e.time, centiseconds: e.centiseconds) == t)
    }

    @Test func timestampsClampToFATRange() {
        #expect(FATTimestamp.decode(date: FATTimestamp.encode(FATTime(seconds: 0)).date) == FATTime(seconds: 315_532_800))
        #expect(FATTimestamp.decode(date: 0, time: 0xFFFF).seconds >= 315_532_800, "nonsense fields decode without trapping")
        #expect(FATTimestamp.encode(FATTime(seconds: Int64.max)).date >> 9 == 127)
    }
}
