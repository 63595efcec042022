/// A volume group as its metadata text describes it (the fields imgsandbox needs): extent size, PVs with
/// their first extent (pe_start), and LVs with their segments. Numbers are checked before any arithmetic.
struct LVMVolumeGroup {
    struct PhysicalVolume {
        let key: String
        /// Without dashes, as the PV header stores it.
        let uuid: String
        let peStart: UInt64
        let peCount: UInt64
    }

    struct Segment {
        let startExtent: UInt64
        let extentCount: UInt64
        let type: String
        let stripeCount: Int64
        /// (PV key, first physical extent) per stripe.
        let stripes: [(pv: String, extent: UInt64)]
    }

    struct Volume {
        let name: String
        let segments: [Segment]
    }

    /// A volume group no image needs would have more: a bound on the work a hostile text can cause.
    static let maxVolumes = 1024
    static let maxSegments = 1024
    static let maxExtentSectors: UInt64 = 1 << 32

    let name: String
    let id: String
    let seqno: Int64
    /// In 512-byte sectors.
    let extentSize: UInt64
    let physicalVolumes: [String: PhysicalVolume]
    let volumes: [Volume]

    init(metadata: [UInt8]) throws(LVMError) {
        let top = try LVMConfigParser.parse(metadata)
        let groups = top.sections
        guard groups.count == 1, let name = groups.first?.key, let vg = groups.first?.value else {
            throw .metadataField(path: "(top level)", problem: "\(groups.count) volume groups, expected 1")
        }
        self.name = name
        id = try Self.string(vg, "id", in: name)
        seqno = try Self.number(vg, "seqno", in: name, max: UInt64(Int64.max)).signed
        extentSize = try Self.number(vg, "extent_size", in: name, max: Self.maxExtentSectors)
        guard extentSize > 0 else { throw .metadataField(path: "\(name)/extent_size", problem: "is 0") }

        var pvs: [String: PhysicalVolume] = [:]
        for entry in vg["physical_volumes"]?.sections ?? [] {
            let (key, pv) = (entry.key, entry.value)
            let path = "\(name)/physical_volumes/\(key)"
            pvs[key] = PhysicalVolume(key: key, uuid: String(try Self.string(pv, "id", in: path).filter { $0 != "-" }),
                                      peStart: try Self.number(pv, "pe_start", in: path, max: 1 << 48),
                                      peCount: try Self.number(pv, "pe_count", in: path, max: 1 << 40))
        }
        physicalVolumes = pvs

        var volumes: [Volume] = []
        let lvSections = vg["logical_volumes"]?.sections ?? []
        guard lvSections.count <= Self.maxVolumes else {
            throw .metadataField(path: "\(name)/logical_volumes", problem: "more than \(Self.maxVolumes) volumes")
        }
        for entry in lvSections {
            let (lvName, lv) = (entry.key, entry.value)
            let path = "\(name)/logical_volumes/\(lvName)"
            let segmentSections = lv.sections
            guard segmentSections.count <= Self.maxSegments else {
                throw .metadataField(path: path, problem: "more than \(Self.maxSegments) segments")
            }
            var segments: [Segment] = []
            for entry in segmentSections {
                let (segKey, seg) = (entry.key, entry.value)
                let segPath = "\(path)/\(segKey)"
                let type = try Self.string(seg, "type", in: segPath)
                var stripes: [(String, UInt64)] = []
                let raw = seg["stripes"]?.list ?? []
                var i = 0
                while i + 1 < raw.count {
                    guard let pv = raw[i].string, let extent = raw[i + 1].integer, extent >= 0, extent <= 1 << 40 else {
                        throw .metadataField(path: "\(segPath)/stripes", problem: "expected \"pvN\", extent pairs")
                    }
                    stripes.append((pv, UInt64(extent)))
                    i += 2
                }
                segments.append(Segment(startExtent: try Self.number(seg, "start_extent", in: segPath, max: 1 << 40),
                                        extentCount: try Self.number(seg, "extent_count", in: segPath, max: 1 << 40),
                                        type: type, stripeCount: seg["stripe_count"]?.integer ?? 0, stripes: stripes))
            }
            volumes.append(Volume(name: lvName, segments: segments.sorted { $0.startExtent < $1.startExtent }))
        }
        self.volumes = volumes
    }

    /// No two linear or striped segments may use the same physical extent (hostile or corrupt metadata
    /// would otherwise make two volumes share bytes).
    func checkNoSharedExtents() throws(LVMError) {
        var used: [(pv: String, first: UInt64, end: UInt64, volume: String)] = []
        for v in volumes {
            for s in v.segments where s.type == "striped" && s.stripeCount >= 1 {
                let perStripe = s.extentCount / UInt64(s.stripeCount)
                for stripe in s.stripes {
                    // Both terms are below 2^41: no overflow.
                    used.append((stripe.pv, stripe.extent, stripe.extent + perStripe, "\(name)/\(v.name)"))
                }
            }
        }
        used.sort { ($0.pv, $0.first) < ($1.pv, $1.first) }
        for (a, b) in zip(used, used.dropFirst()) where a.pv == b.pv && b.first < a.end {
            throw .segmentsOverlap(first: a.volume, second: b.volume)
        }
    }

    /// Where `volume`'s bytes lie in the image, in LV order: one range per run of consecutive extents (segments
    /// that follow each other on disk are merged). Every segment lies inside its PV's extents and partition.
    func ranges(of volume: Volume, pvPartitions: [String: Partition]) throws(LVMError) -> [ByteRange] {
        let full = "\(name)/\(volume.name)"
        guard !volume.segments.isEmpty else { throw .segmentGap(volume: full, detail: "has no segments") }
        var ranges: [ByteRange] = [], nextExtent: UInt64 = 0, total: UInt64 = 0
        for s in volume.segments {
            guard s.type == "striped" else { throw .unsupportedSegment(volume: full, type: s.type) }
            guard s.stripeCount == 1, s.stripes.count == 1 else {
                throw .unsupportedSegment(volume: full, type: "striped across \(s.stripeCount) stripes")
            }
            guard s.startExtent == nextExtent else {
                throw .segmentGap(volume: full, detail: "segment at extent \(s.startExtent), expected \(nextExtent)")
            }
            guard s.extentCount > 0 else { throw .segmentGap(volume: full, detail: "a segment has no extents") }
            nextExtent += s.extentCount
            let (pvKey, extent) = s.stripes[0]
            guard let pv = physicalVolumes[pvKey] else {
                throw .segmentOutOfRange(volume: full, detail: "names \(pvKey), which the volume group does not list")
            }
            guard let partition = pvPartitions[pv.uuid] else { throw .physicalVolumeMissing(volume: full, pv: pv.uuid) }
            guard extent + s.extentCount <= pv.peCount else {
                throw .segmentOutOfRange(volume: full, detail: "extents \(extent)+\(s.extentCount) beyond the \(pv.peCount) of \(pvKey)")
            }
            guard let first = checkedProduct(extent, extentSize).flatMap({ checkedSum($0, pv.peStart) }).flatMap({ checkedProduct($0, 512) }),
                  let length = checkedProduct(s.extentCount, extentSize).flatMap({ checkedProduct($0, 512) }),
                  first <= partition.sizeBytes, length <= partition.sizeBytes - first else {
                throw .segmentOutOfRange(volume: full, detail: "extents \(extent)+\(s.extentCount) lie beyond partition \(partition.number)")
            }
            // Bounded by the image when no extents are shared; checked all the same (Partition adds them up).
            guard let sum = checkedSum(total, length) else {
                throw .segmentOutOfRange(volume: full, detail: "its segments add up to more than 2^64 bytes")
            }
            total = sum
            let at = partition.startByte + first
            if let last = ranges.last, last.offset + last.length == at {
                ranges[ranges.count - 1] = ByteRange(offset: last.offset, length: last.length + length)
            } else {
                ranges.append(ByteRange(offset: at, length: length))
            }
        }
        return ranges
    }

    private static func string(_ section: LVMValue, _ key: String, in path: String) throws(LVMError) -> String {
        guard let v = section[key]?.string else { throw .metadataField(path: "\(path)/\(key)", problem: "missing or not a string") }
        return v
    }

    private static func number(_ section: LVMValue, _ key: String, in path: String, max: UInt64) throws(LVMError) -> UInt64 {
        guard let v = section[key]?.integer, v >= 0, UInt64(v) <= max else {
            throw .metadataField(path: "\(path)/\(key)", problem: "missing, negative or above \(max)")
        }
        return UInt64(v)
    }
}

private func checkedSum(_ a: UInt64, _ b: UInt64) -> UInt64? {
    let (v, overflow) = a.addingReportingOverflow(b)
    return overflow ? nil : v
}

private extension UInt64 {
    var signed: Int64 { Int64(clamping: self) }
}
