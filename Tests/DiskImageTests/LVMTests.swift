import Glibc
import TestSupport
import Testing
@testable import DiskImage

/// Zeros except `bytes` at `at`: a large sparse image without the memory.
struct PaddedSource: ByteSource {
    let bytes: [UInt8]
    let at: UInt64
    let size: UInt64

    func read(at offset: UInt64, count: Int) throws(DiskImageError) -> [UInt8] {
        try checkRange(offset, count)
        var out = [UInt8](repeating: 0, count: count)
        for i in 0..<count {
            let absolute = offset + UInt64(i)
            if absolute >= at, absolute - at < UInt64(bytes.count) { out[i] = bytes[Int(absolute - at)] }
        }
        return out
    }
}

/// Real LVM2 metadata: the first MiB of a 64 MiB PV made by lvm2 2.03.16 (pvcreate -u 11111111-2222-...,
/// vgcreate testvg, lvcreate -L 8M root, lvcreate -L 4M data, lvextend -L +4M root, with --driverloaded n),
/// so "root" has two segments (extents 0-1 and 3) around "data" (extent 2). Extent 4 MiB, pe_start 1 MiB.
@Suite("LVM2 metadata")
struct LVMTests {
    static let pvStart: UInt64 = 1 << 20
    static let pvSize: UInt64 = 64 << 20

    static let fixture: [UInt8] = {
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX))
        let file = realpath(#filePath, &resolved) != nil ? resolved.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : #filePath
        let dir = String(file[..<file.lastIndex(of: "/")!])
        guard let pipe = popen("gzip -dc '\(dir)/Fixtures/lvm-pv-head.gz'", "r") else { return [] }
        var out: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, pipe)
            if n == 0 { break }
            out += buffer[0..<n]
        }
        pclose(pipe)
        return out
    }()

    static let table = PartitionTable(scheme: .mbr, partitions: [
        Partition(number: 1, startByte: 512 * 8, sizeBytes: pvStart - 512 * 8, typeName: "FAT", mbrType: 0x0C),
        Partition(number: 2, startByte: pvStart, sizeBytes: pvSize, typeName: "Linux LVM (0x8e)", mbrType: 0x8E),
    ], diskSize: pvStart + pvSize)

    static func volumes(_ pv: [UInt8]) -> (volumes: [LogicalVolume], problems: [String]) {
        LVM.volumes(PaddedSource(bytes: pv, at: pvStart, size: pvStart + pvSize), table: table)
    }

    /// The fixture with `text` as its metadata (at the ring's start, or `at` bytes into the area), checksums made right.
    static func withMetadata(_ text: String, at textOffset: Int = 512, declaredSize: UInt64? = nil) -> [UInt8] {
        var pv = fixture
        let area = 4096, areaSize = 0xFF000
        let bytes = Array(text.utf8) + [0]
        for (i, b) in bytes.enumerated() {
            // The ring wraps from the area's end to just after its 512-byte header.
            let position = textOffset + i < areaSize ? textOffset + i : 512 + (textOffset + i - areaSize)
            if area + position < pv.count { pv[area + position] = b }
        }
        put(&pv, UInt64(textOffset), at: area + 40, width: 8)
        put(&pv, declaredSize ?? UInt64(bytes.count), at: area + 48, width: 8)
        put(&pv, UInt64(LVMPhysicalVolume.calcCRC(Array(text.utf8) + [0])), at: area + 56, width: 4)
        put(&pv, UInt64(LVMPhysicalVolume.calcCRC(pv[(area + 4)..<(area + 512)])), at: area, width: 4)
        return pv
    }

    static func put(_ bytes: inout [UInt8], _ value: UInt64, at: Int, width: Int) {
        for i in 0..<width { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }

    static func metadata(extentCount: Int = 15, volumes: String) -> String {
        """
        testvg {
        id = "FxOf0c-5qu3-Znue-Y5ee-wMe0-IuHY-c634ZE"
        seqno = 9
        extent_size = 8192
        physical_volumes {
        pv0 {
        id = "111111-1122-2233-3344-4455-5555-555555"
        dev_size = 131072
        pe_start = 2048
        pe_count = \(extentCount)
        }
        }
        logical_volumes {
        \(volumes)
        }
        }
        contents = "Text Format Volume Group"
        version = 1
        """
    }

    static func linear(_ name: String, _ segments: [(start: Int, count: Int, pe: Int)], type: String = "striped") -> String {
        var text = "\(name) {\nid = \"x\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nsegment_count = \(segments.count)\n"
        for (i, s) in segments.enumerated() {
            text += "segment\(i + 1) {\nstart_extent = \(s.start)\nextent_count = \(s.count)\ntype = \"\(type)\"\nstripe_count = 1\nstripes = [\"pv0\", \(s.pe)]\n}\n"
        }
        return text + "}\n"
    }

    @Test func realMetadataFromLVM() throws {
        #expect(Self.fixture.count == 1 << 20)
        let (volumes, problems) = Self.volumes(Self.fixture)
        #expect(problems.isEmpty)
        #expect(volumes.map(\.fullName) == ["testvg/root", "testvg/data"])
        // data: extent 2 -> PV start + pe_start (1 MiB) + 2 * 4 MiB.
        #expect(volumes[1].region == Partition(number: LVM.firstVolumeNumber + 1, startByte: Self.pvStart + (1 << 20) + (8 << 20),
                                               sizeBytes: 4 << 20, typeName: "LVM2 logical volume testvg/data"))
        // root: extents 0-1, then extent 3 (after data): two ranges, in LV order, 8 MiB + 4 MiB.
        let pe0 = Self.pvStart + (1 << 20)
        #expect(volumes[0].region?.ranges == [ByteRange(offset: pe0, length: 8 << 20), ByteRange(offset: pe0 + (12 << 20), length: 4 << 20)])
        #expect(volumes[0].region?.sizeBytes == 12 << 20)
        #expect(volumes[0].region?.isContiguous == false)
        #expect(volumes[1].region?.isContiguous == true)
    }

    @Test func contiguousSegmentsMakeOneRegion() {
        let pv = Self.withMetadata(Self.metadata(volumes: Self.linear("root", [(0, 2, 3), (2, 3, 5)])))
        let (volumes, problems) = Self.volumes(pv)
        #expect(problems.isEmpty)
        #expect(volumes.first?.region?.startByte == Self.pvStart + (1 << 20) + 3 * (4 << 20))
        #expect(volumes.first?.region?.sizeBytes == 5 * (4 << 20))
    }

    @Test func metadataWrappingTheRingIsRead() {
        let text = Self.metadata(volumes: Self.linear("root", [(0, 1, 0)]))
        let pv = Self.withMetadata(text, at: 0xFF000 - 100)
        let (volumes, problems) = Self.volumes(pv)
        #expect(problems.isEmpty)
        #expect(volumes.map(\.fullName) == ["testvg/root"])
    }

    @Test(arguments: [("striped", 2, "striped across 2 stripes"), ("thin", 1, "thin"), ("raid1", 1, "raid1"),
                      ("snapshot", 1, "snapshot"), ("mirror", 1, "mirror")])
    func otherSegmentTypesAreENOTSUP(type: String, stripes: Int, said: String) {
        var lv = Self.linear("odd", [(0, 2, 0)], type: type)
        lv = lv.replacingFirst("stripe_count = 1", with: "stripe_count = \(stripes)")
        let (volumes, _) = Self.volumes(Self.withMetadata(Self.metadata(volumes: lv)))
        guard case .failure(let error)? = volumes.first?.mapping else { Issue.record("mapped \(volumes)"); return }
        #expect(error == .unsupportedSegment(volume: "testvg/odd", type: said))
        #expect(error.errno == ENOTSUP)
    }

    // MARK: Hostile metadata

    @Test func overlappingVolumesRejectTheGroup() {
        let pv = Self.withMetadata(Self.metadata(volumes: Self.linear("a", [(0, 3, 0)]) + Self.linear("b", [(0, 2, 2)])))
        let (volumes, problems) = Self.volumes(pv)
        #expect(volumes.isEmpty)
        #expect(problems == ["volume group testvg: logical volumes testvg/a and testvg/b share physical extents"])
    }

    @Test func outOfRangeSegments() {
        let beyondPV = Self.volumes(Self.withMetadata(Self.metadata(volumes: Self.linear("a", [(0, 2, 14)]))))
        #expect(beyondPV.volumes.first?.mapping == .failure(.segmentOutOfRange(volume: "testvg/a", detail: "extents 14+2 beyond the 15 of pv0")))
        // pe_count lies: 100 extents of 4 MiB on a 64 MiB partition.
        let beyondPartition = Self.volumes(Self.withMetadata(Self.metadata(extentCount: 100, volumes: Self.linear("a", [(0, 2, 20)]))))
        #expect(beyondPartition.volumes.first?.mapping == .failure(.segmentOutOfRange(volume: "testvg/a", detail: "extents 20+2 lie beyond partition 2")))
        let huge = Self.volumes(Self.withMetadata(Self.metadata(volumes: Self.linear("a", [(0, 2, 0)]).replacingFirst("extent_count = 2", with: "extent_count = 9223372036854775807"))))
        #expect(huge.volumes.isEmpty)
        #expect(huge.problems.first?.contains("extent_count: missing, negative or above") == true)
        // 2^32-sector extents at extent 2^32-1 after a pe_start of 2^33 sectors: the sector number passes 2^64;
        // an error, not a trap.
        let overflowing = Self.volumes(Self.withMetadata(Self.metadata(extentCount: 1 << 40, volumes: Self.linear("a", [(0, 1, (1 << 32) - 1)]))
            .replacingFirst("extent_size = 8192", with: "extent_size = 4294967296")
            .replacingFirst("pe_start = 2048", with: "pe_start = 8589934592")))
        #expect(overflowing.volumes.first?.mapping == .failure(.segmentOutOfRange(volume: "testvg/a", detail: "extents 4294967295+1 lie beyond partition 2")))
        let gap = Self.volumes(Self.withMetadata(Self.metadata(volumes: Self.linear("a", [(0, 1, 0), (2, 1, 1)]))))
        #expect(gap.volumes.first?.mapping == .failure(.segmentGap(volume: "testvg/a", detail: "segment at extent 2, expected 1")))
        let missing = Self.volumes(Self.withMetadata(Self.metadata(volumes: Self.linear("a", [(0, 1, 0)]).replacingFirst("\"pv0\"", with: "\"pv7\""))))
        #expect(missing.volumes.first?.mapping == .failure(.segmentOutOfRange(volume: "testvg/a", detail: "names pv7, which the volume group does not list")))
    }

    /// Linear volumes of several segments (issue 25 item 6): each segment is checked on its own; runs that
    /// follow each other on disk are one range; anything malformed is a reason, never a wrong range.
    @Test func multiSegmentVolumes() {
        func mapping(_ lvs: String, extents: Int = 15) -> Result<Partition, LVMError>? {
            Self.volumes(Self.withMetadata(Self.metadata(extentCount: extents, volumes: lvs))).volumes.first?.mapping
        }
        // Segments listed out of order are put in LV order: 0-1 at PE 3, 2-4 at PE 5: contiguous.
        let reordered = mapping(Self.linear("a", [(2, 3, 5), (0, 2, 3)]))
        #expect(reordered.flatMap { try? $0.get() }?.startByte == Self.pvStart + (1 << 20) + 3 * (4 << 20))
        #expect(reordered.flatMap { try? $0.get() }?.sizeBytes == 5 * (4 << 20))
        // In LV order but not on disk (PE 5-6, then PE 0-2): two ranges in LV order, never one of the span.
        let pe0 = Self.pvStart + (1 << 20), extent: UInt64 = 4 << 20
        #expect(mapping(Self.linear("a", [(0, 2, 5), (2, 3, 0)])).flatMap { try? $0.get() }?.ranges
                == [ByteRange(offset: pe0 + 5 * extent, length: 2 * extent), ByteRange(offset: pe0, length: 3 * extent)])
        // Three segments, the first two one run on disk: merged into one range.
        #expect(mapping(Self.linear("a", [(0, 1, 7), (1, 1, 8), (2, 2, 1)])).flatMap { try? $0.get() }?.ranges
                == [ByteRange(offset: pe0 + 7 * extent, length: 2 * extent), ByteRange(offset: pe0 + extent, length: 2 * extent)])
        // Three segments whose middle one skips extents of the LV.
        #expect(mapping(Self.linear("a", [(0, 1, 0), (1, 1, 1), (5, 1, 2)]))
                == .failure(.segmentGap(volume: "testvg/a", detail: "segment at extent 5, expected 2")))
        // Two segments claiming the same LV extents (a repeated start).
        #expect(mapping(Self.linear("a", [(0, 2, 0), (0, 2, 4)]))
                == .failure(.segmentGap(volume: "testvg/a", detail: "segment at extent 0, expected 2")))
        // A later segment beyond its PV, the first one sound.
        #expect(mapping(Self.linear("a", [(0, 2, 0), (2, 3, 13)]))
                == .failure(.segmentOutOfRange(volume: "testvg/a", detail: "extents 13+3 beyond the 15 of pv0")))
        // One volume's own segments sharing physical extents: the whole group is refused.
        let selfOverlap = Self.volumes(Self.withMetadata(Self.metadata(volumes: Self.linear("a", [(0, 3, 0), (3, 2, 1)]))))
        #expect(selfOverlap.volumes.isEmpty)
        #expect(selfOverlap.problems == ["volume group testvg: logical volumes testvg/a and testvg/a share physical extents"])
        // A segment of no extents.
        #expect(mapping(Self.linear("a", [(0, 2, 0), (2, 0, 2)]))
                == .failure(.segmentGap(volume: "testvg/a", detail: "a segment has no extents")))
    }

    /// Random linear volumes (any segment order, gaps, overlaps, out of range): every volume that maps has
    /// ranges inside the PV's extents, sharing no byte with any other range of the group, adding up to its
    /// extents; everything else is a reason. Never a trap.
    @Test func randomSegmentsMapOnlyToTheirOwnExtents() {
        var rng = SplitMix64(seed: 25)
        let extent: UInt64 = 4 << 20, pe0 = Self.pvStart + (1 << 20), peCount = 15
        for _ in 0..<500 {
            var lvs = "", extents: [String: Int] = [:]
            for v in 0..<Int(rng.next() % 3 + 1) {
                var segments: [(Int, Int, Int)] = [], next = 0
                for _ in 0..<Int(rng.next() % 4 + 1) {
                    let count = Int(rng.next() % 4)  // 0: a segment of no extents
                    let start = rng.next() % 8 == 0 ? next + 1 : next  // now and then a gap
                    segments.append((start, count, Int(rng.next() % UInt64(peCount + 2))))
                    next = start + count
                }
                lvs += Self.linear("v\(v)", segments.shuffled(using: &rng))
                extents["testvg/v\(v)"] = next
            }
            let (volumes, _) = Self.volumes(Self.withMetadata(Self.metadata(extentCount: peCount, volumes: lvs)))
            var used: [ByteRange] = []
            for volume in volumes {
                guard let region = volume.region else { continue }
                #expect(region.sizeBytes == UInt64(extents[volume.fullName] ?? -1) * extent, "\(lvs)")
                for r in region.ranges {
                    #expect(r.length > 0 && r.offset >= pe0 && r.offset + r.length <= pe0 + UInt64(peCount) * extent, "\(lvs)")
                    #expect(!used.contains { $0.offset < r.offset + r.length && r.offset < $0.offset + $0.length }, "\(lvs)")
                    used.append(r)
                }
            }
        }
    }

    @Test func badChecksums() {
        var label = Self.fixture
        label[512 + 100] ^= 1
        #expect(Self.volumes(label).problems.first?.contains("LVM2 label in sector 1 has checksum") == true)
        var header = Self.fixture
        header[4096 + 100] ^= 1
        #expect(Self.volumes(header).problems.first?.contains("metadata area: header checksum") == true)
        var text = Self.fixture
        text[0x2200 + 10] ^= 1
        #expect(Self.volumes(text).problems.first?.contains("metadata text checksum") == true)
    }

    @Test func hugeDeepOrEndlessText() {
        let tooLarge = Self.volumes(Self.withMetadata("x", declaredSize: 2 << 20))
        #expect(tooLarge.problems == ["partition 2: LVM2 metadata text of 2097152 bytes is larger than the 1048576-byte limit"])
        let biggerThanRing = Self.volumes(Self.withMetadata("x", declaredSize: 0xFF000))
        #expect(biggerThanRing.problems.first?.contains("does not fit") == true)
        let deep = Self.volumes(Self.withMetadata(String(repeating: "a {\n", count: 1000)))
        #expect(deep.problems == ["partition 2: LVM2 metadata nests sections deeper than 16"])
        let many = Self.volumes(Self.withMetadata("x = [" + String(repeating: "1,", count: 250_000) + "1]"))
        #expect(many.problems == ["partition 2: LVM2 metadata holds more than 200000 values"])
        for broken in ["testvg {", "testvg { id = \"open", "a = [1, 2", "= 3", "testvg { x = }", "a b c", "}"] {
            let result = Self.volumes(Self.withMetadata(broken))
            #expect(result.volumes.isEmpty)
            #expect(result.problems.first?.contains("LVM2 metadata line") == true, "\(broken): \(result.problems)")
        }
        let noGroup = Self.volumes(Self.withMetadata("contents = \"Text Format Volume Group\"\nversion = 1\n"))
        #expect(noGroup.problems == ["partition 2: LVM2 metadata (top level): 0 volume groups, expected 1"])
    }

    @Test func configSyntax() throws {
        let v = try LVMConfigParser.parse(Array("# c\na = \"q\\\"x\" # tail\nb=-5 s { l = [ \"p\", 3 ] e = [] }\n".utf8))
        #expect(v["a"]?.string == "q\"x")
        #expect(v["b"]?.integer == -5)
        #expect(v["s"]?["l"]?.list?.count == 2)
        #expect(v["s"]?["e"]?.list?.isEmpty == true)
    }

    @Test func noLabelIsNoVolumeGroup() {
        let (volumes, problems) = LVM.volumes(PaddedSource(bytes: [], at: 0, size: Self.pvStart + Self.pvSize), table: Self.table)
        #expect(volumes.isEmpty && problems.isEmpty)
    }
}

