import Glibc

/// What can be wrong with an image's LVM2 metadata, or why a logical volume cannot be served.
public enum LVMError: Error, Sendable, Equatable, CustomStringConvertible {
    case labelChecksum(sector: Int, stored: UInt32, computed: UInt32)
    case pvHeader(String)
    case metadataAreaHeader(String)
    case metadataTooLarge(bytes: UInt64, limit: Int)
    case metadataChecksum(stored: UInt32, computed: UInt32)
    case metadataSyntax(line: Int, what: String)
    case metadataNestedTooDeep(limit: Int)
    case metadataTooManyValues(limit: Int)
    case metadataField(path: String, problem: String)
    case noMetadata
    case physicalVolumeMissing(volume: String, pv: String)
    case segmentOutOfRange(volume: String, detail: String)
    case segmentsOverlap(first: String, second: String)
    case segmentGap(volume: String, detail: String)
    case unsupportedSegment(volume: String, type: String)

    /// ENOTSUP for well-formed volumes imgsandbox cannot serve (yet); EINVAL for malformed metadata.
    public var errno: Int32 {
        switch self {
        case .unsupportedSegment: return ENOTSUP
        default: return EINVAL
        }
    }

    public var description: String {
        switch self {
        case .labelChecksum(let sector, let stored, let computed):
            return "LVM2 label in sector \(sector) has checksum \(hex32(stored)), computed \(hex32(computed))"
        case .pvHeader(let s): return "LVM2 physical volume header: \(s)"
        case .metadataAreaHeader(let s): return "LVM2 metadata area: \(s)"
        case .metadataTooLarge(let bytes, let limit):
            return "LVM2 metadata text of \(bytes) bytes is larger than the \(limit)-byte limit"
        case .metadataChecksum(let stored, let computed):
            return "LVM2 metadata text checksum is \(hex32(stored)), computed \(hex32(computed))"
        case .metadataSyntax(let line, let what): return "LVM2 metadata line \(line): \(what)"
        case .metadataNestedTooDeep(let limit): return "LVM2 metadata nests sections deeper than \(limit)"
        case .metadataTooManyValues(let limit): return "LVM2 metadata holds more than \(limit) values"
        case .metadataField(let path, let problem): return "LVM2 metadata \(path): \(problem)"
        case .noMetadata: return "LVM2 physical volume has no usable metadata area"
        case .physicalVolumeMissing(let volume, let pv):
            return "logical volume \(volume) lies on physical volume \(pv), which is not in the image"
        case .segmentOutOfRange(let volume, let detail): return "logical volume \(volume): \(detail)"
        case .segmentsOverlap(let a, let b): return "logical volumes \(a) and \(b) share physical extents"
        case .segmentGap(let volume, let detail): return "logical volume \(volume): \(detail)"
        case .unsupportedSegment(let volume, let type):
            return "logical volume \(volume) is \(type), not linear: not supported (only linear volumes are)"
        }
    }
}
