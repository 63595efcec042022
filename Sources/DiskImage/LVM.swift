/// A logical volume of the image and where its bytes are when it is linear (one range per run of its
/// segments on disk). Otherwise the reason it cannot be served (ENOTSUP for striped, thin, raid, snapshot...).
public struct LogicalVolume: Sendable, Equatable {
    public let group: String
    public let name: String
    /// A partition-like region: number 1000 + the volume's index among the image's volumes, its ranges in
    /// the image, typeName "LVM2 logical volume VG/LV".
    public let mapping: Result<Partition, LVMError>

    public var region: Partition? { try? mapping.get() }
    public var fullName: String { "\(group)/\(name)" }
}

public enum LVM {
    /// Numbers of LV regions start here, clear of any partition number (MBR logicals and GPT stop at 1024
    /// entries in this reader, but an image never has 1000 partitions).
    public static let firstVolumeNumber = 1001

    /// Every logical volume of the volume groups whose PVs are partitions of `table` (each VG once, from the
    /// PV with the highest seqno). A PV or VG whose metadata is unreadable or inconsistent is returned as a
    /// problem line and its volumes are absent.
    public static func volumes(_ source: some ByteSource, table: PartitionTable) -> (volumes: [LogicalVolume], problems: [String]) {
        var pvs: [(partition: Partition, pv: LVMPhysicalVolume)] = []
        var problems: [String] = []
        for p in table.partitions where !p.isExtendedContainer {
            do throws(LVMError) {
                if let pv = try LVMPhysicalVolume.read(source, offset: p.startByte, length: p.sizeBytes) { pvs.append((p, pv)) }
            } catch {
                problems.append("partition \(p.number): \(error)")
            }
        }
        var groups: [String: (seqno: Int64, group: LVMVolumeGroup)] = [:]
        var order: [String] = []
        for (p, pv) in pvs {
            do throws(LVMError) {
                let group = try LVMVolumeGroup(metadata: pv.metadata)
                if let known = groups[group.id], known.seqno >= group.seqno { continue }
                if groups[group.id] == nil { order.append(group.id) }
                groups[group.id] = (group.seqno, group)
            } catch {
                problems.append("partition \(p.number): \(error)")
            }
        }
        let located = Dictionary(pvs.map { ($0.pv.uuid, $0.partition) }, uniquingKeysWith: { a, _ in a })
        var result: [LogicalVolume] = []
        for id in order {
            guard let group = groups[id]?.group else { continue }
            do throws(LVMError) {
                try group.checkNoSharedExtents()
            } catch {
                problems.append("volume group \(group.name): \(error)")
                continue
            }
            for lv in group.volumes {
                let number = firstVolumeNumber + result.count
                let mapping = Result { () throws(LVMError) -> Partition in
                    Partition(number: number, ranges: try group.ranges(of: lv, pvPartitions: located),
                              typeName: "LVM2 logical volume \(group.name)/\(lv.name)")
                }
                result.append(LogicalVolume(group: group.name, name: lv.name, mapping: mapping))
            }
        }
        return (result, problems)
    }
}
