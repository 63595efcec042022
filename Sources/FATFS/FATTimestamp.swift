/// DOS date/time fields <-> Unix time. FAT stores local time without a zone; we take it as UTC (what
/// Linux vfat does with its default tz, and what a Pi's kernel writes), so a round trip is exact.
/// Resolution: time 2 s, create time 10 ms, access date 1 day; range 1980-01-01 ... 2107-12-31.
enum FATTimestamp {
    static let minSeconds: Int64 = 315_532_800            // 1980-01-01 00:00:00
    static let maxSeconds: Int64 = 4_354_819_198          // 2107-12-31 23:59:58

    static func decode(date: UInt16, time: UInt16 = 0, centiseconds: UInt8 = 0) -> FATTime {
        let year = 1980 + Int64(date >> 9)
        let month = max(1, min(12, Int64((date >> 5) & 0x0F)))
        let day = max(1, min(31, Int64(date & 0x1F)))
        let hours = min(23, Int64(time >> 11)), minutes = min(59, Int64((time >> 5) & 0x3F))
        let seconds = min(58, Int64(time & 0x1F) * 2)
        let cs = Int64(min(centiseconds, 199))
        let days = daysFromCivil(year, month, day)
        let total = days * 86_400 + hours * 3600 + minutes * 60 + seconds + cs / 100
        return FATTime(seconds: total, nanoseconds: Int32((cs % 100) * 10_000_000))
    }

    /// (date, time, centiseconds) for a Unix time, clamped to FAT's range.
    static func encode(_ t: FATTime) -> (date: UInt16, time: UInt16, centiseconds: UInt8) {
        let s = max(minSeconds, min(maxSeconds + 1, t.seconds))
        let clampedNanos = t.seconds < minSeconds ? 0 : t.seconds > maxSeconds + 1 ? 0 : Int64(max(0, t.nanoseconds))
        var days = s / 86_400, rem = s % 86_400
        if rem < 0 { rem += 86_400; days -= 1 }
        let (y, m, d) = civilFromDays(days)
        let date = UInt16(y - 1980) << 9 | UInt16(m) << 5 | UInt16(d)
        let time = UInt16(rem / 3600) << 11 | UInt16((rem % 3600) / 60) << 5 | UInt16((rem % 60) / 2)
        let cs = UInt8((rem % 2) * 100 + clampedNanos / 10_000_000)
        return (date, time, cs)
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
    static func daysFromCivil(_ year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilFromDays(_ days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
