import PrintableText

/// One path that differs between a sandbox and its pristine image.
public struct Change: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable {
        case added, deleted, modified
        /// A damaged entry of the image (a corrupt FAT directory entry or chain): what it holds cannot be
        /// compared, so it cannot be saved either.
        case unreadable
    }

    /// What differs on a modified path. Access and change times are not compared: reading a copied-up
    /// file moves its atime, and every copy-up sets a new ctime. `links`: a non-directory's number of
    /// hard links (a name added to it or removed from it).
    public enum Aspect: String, Sendable, Codable, CaseIterable, Comparable {
        case type, content
        case linkTarget = "link_target"
        case links, mode, owner, times, xattrs

        public static func < (a: Aspect, b: Aspect) -> Bool {
            allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
        }
    }

    /// Path from the sandbox's root, as raw bytes: names in an image need not be UTF-8.
    public let rawPath: [UInt8]
    public let kind: Kind
    /// Empty unless `kind` is modified.
    public let aspects: [Aspect]

    public init(rawPath: [UInt8], kind: Kind, aspects: [Aspect] = []) {
        self.rawPath = rawPath
        self.kind = kind
        self.aspects = aspects.sorted()
    }

    /// The path for people and JSON: bytes outside printable ASCII (and the backslash) as \xNN.
    public var path: String { PathText.escape(rawPath) }

    /// `modified content,times /etc/hostname`: the kind first, the path last (it may hold spaces).
    public var line: String {
        kind == .modified ? "modified \(aspects.map(\.rawValue).joined(separator: ",")) \(path)" : "\(kind.rawValue) \(path)"
    }

    private enum CodingKeys: String, CodingKey { case path, change, aspects }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(path, forKey: .path)
        try container.encode(kind, forKey: .change)
        try container.encode(aspects, forKey: .aspects)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let text = try container.decode(String.self, forKey: .path)
        guard let raw = PathText.unescape(text) else {
            throw DecodingError.dataCorruptedError(forKey: .path, in: container, debugDescription: "bad escape in \(text)")
        }
        self.init(rawPath: raw, kind: try container.decode(Kind.self, forKey: .change),
                  aspects: try container.decode([Aspect].self, forKey: .aspects))
    }
}
