/// The LVM2 on-disk format of one physical volume (lvm2 lib/label/label.h, lib/format_text/layout.h):
/// a 512-byte label ("LABELONE", in one of the first four sectors), the PV header after it (UUID, device
/// size, lists of data and metadata areas), and in each metadata area a header (" LVM2 x[5A%r0N*>") whose
/// raw locations point at the metadata text, a ring buffer after the header. Every offset is checked
/// against the partition; every checksum is LVM's (CRC-32 from 0xf597a6cf, no final inversion).
struct LVMPhysicalVolume {
    static let initialCRC: UInt32 = 0xF597_A6CF
    static let mdaMagic = Array(" LVM2 x[5A%r0N*>".utf8)
    static let mdaHeaderSize: UInt64 = 512
    /// Real VGs of an SD-card image have a few KiB; LVM's default metadata area is 1 MiB.
    static let maxMetadataBytes = 1 << 20
    static let maxAreas = 8

    /// 32 characters, without the dashes the metadata text puts in.
    let uuid: String
    let deviceSize: UInt64
    /// The metadata text of the first usable area (all copies hold the same VG), NUL and after dropped.
    let metadata: [UInt8]

    static func calcCRC(_ bytes: some Collection<UInt8>) -> UInt32 { CRC32.update(initialCRC, bytes) }

    /// Whether the partition carries an LVM2 label; nil (no error) when it does not.
    static func labelSector(_ source: some ByteSource, offset: UInt64, length: UInt64) -> (Int, [UInt8])? {
        for sector in 0..<4 where UInt64(sector + 1) * 512 <= length {
            guard let bytes = try? source.read(at: offset + UInt64(sector) * 512, count: 512) else { return nil }
            if bytes.matches("LABELONE", at: 0), bytes.matches("LVM2 001", at: 24) { return (sector, bytes) }
        }
        return nil
    }

    /// Reads the PV in `length` bytes from `offset`; nil when there is no LVM2 label.
    static func read(_ source: some ByteSource, offset: UInt64, length: UInt64) throws(LVMError) -> LVMPhysicalVolume? {
        guard let (sector, label) = labelSector(source, offset: offset, length: length) else { return nil }
        guard label.le64(8) == UInt64(sector) else {
            throw .pvHeader("label in sector \(sector) says it is in sector \(label.le64(8))")
        }
        let stored = label.le32(16), computed = calcCRC(label[20...])
        guard stored == computed else { throw .labelChecksum(sector: sector, stored: stored, computed: computed) }
        let headerAt = Int(label.le32(20))
        // The header (UUID, size) and at least the two list terminators must fit in the sector.
        guard headerAt >= 32, headerAt <= 512 - 40 - 32 else { throw .pvHeader("header offset \(headerAt) is outside the label sector") }
        let uuid = String(decoding: label.slice(headerAt, 32), as: UTF8.self)
        guard uuid.utf8.allSatisfy({ $0 >= 0x21 && $0 < 0x7F }) else { throw .pvHeader("UUID is not printable") }
        let deviceSize = label.le64(headerAt + 32)
        guard deviceSize <= length else {
            throw .pvHeader("device size \(deviceSize) is larger than its partition (\(length) bytes)")
        }
        var at = headerAt + 40
        func areas() throws(LVMError) -> [(offset: UInt64, size: UInt64)] {
            var list: [(UInt64, UInt64)] = []
            while true {
                guard at + 16 <= 512 else { throw .pvHeader("area list runs past the label sector") }
                let (o, s) = (label.le64(at), label.le64(at + 8))
                at += 16
                if o == 0 { return list }
                guard list.count < maxAreas else { throw .pvHeader("more than \(maxAreas) areas") }
                list.append((o, s))
            }
        }
        _ = try areas()  // data areas: pe_start in the metadata is what counts
        let metadataAreas = try areas()
        var firstProblem: LVMError?
        for area in metadataAreas {
            do throws(LVMError) {
                let text = try metadataText(source, partitionOffset: offset, length: min(length, deviceSize == 0 ? length : deviceSize),
                                            area: area)
                return LVMPhysicalVolume(uuid: uuid, deviceSize: deviceSize, metadata: text)
            } catch {
                firstProblem = firstProblem ?? error
            }
        }
        throw firstProblem ?? .noMetadata
    }

    private static func metadataText(_ source: some ByteSource, partitionOffset: UInt64, length: UInt64,
                                     area: (offset: UInt64, size: UInt64)) throws(LVMError) -> [UInt8] {
        guard area.size > mdaHeaderSize, area.offset < length, area.size <= length - area.offset else {
            throw .metadataAreaHeader("area of \(area.size) bytes at \(area.offset) lies outside the physical volume")
        }
        guard let header = try? source.read(at: partitionOffset + area.offset, count: Int(mdaHeaderSize)) else {
            throw .metadataAreaHeader("cannot read its header at \(area.offset)")
        }
        let stored = header.le32(0), computed = calcCRC(header[4...])
        guard stored == computed else {
            throw .metadataAreaHeader("header checksum \(hex32(stored)), computed \(hex32(computed))")
        }
        guard header.slice(4, 16) == mdaMagic else { throw .metadataAreaHeader("no LVM2 magic") }
        guard header.le32(20) == 1 else { throw .metadataAreaHeader("version \(header.le32(20)), expected 1") }
        guard header.le64(24) == area.offset, header.le64(32) == area.size else {
            throw .metadataAreaHeader("header says \(header.le64(32)) bytes at \(header.le64(24)), the label \(area.size) at \(area.offset)")
        }
        // raw_locn[0]: offset (from the area's start), size, checksum, flags (1: ignored copy).
        let (textOffset, textSize, checksum, flags) = (header.le64(40), header.le64(48), header.le32(56), header.le32(60))
        guard textOffset != 0, flags & 1 == 0 else { throw .noMetadata }
        guard textSize <= UInt64(maxMetadataBytes) else { throw .metadataTooLarge(bytes: textSize, limit: maxMetadataBytes) }
        let ring = area.size - mdaHeaderSize
        guard textOffset >= mdaHeaderSize, textOffset < area.size, textSize <= ring else {
            throw .metadataAreaHeader("text of \(textSize) bytes at \(textOffset) does not fit the \(area.size)-byte area")
        }
        // The text wraps from the area's end to just after its header.
        let firstPart = min(textSize, area.size - textOffset)
        var text: [UInt8]
        do throws(DiskImageError) {
            text = try source.read(at: partitionOffset + area.offset + textOffset, count: Int(firstPart))
            if firstPart < textSize {
                text += try source.read(at: partitionOffset + area.offset + mdaHeaderSize, count: Int(textSize - firstPart))
            }
        } catch {
            throw .metadataAreaHeader("cannot read the text: \(error)")
        }
        let computedText = calcCRC(text)
        guard computedText == checksum else { throw .metadataChecksum(stored: checksum, computed: computedText) }
        return Array(text.prefix { $0 != 0 })
    }
}
