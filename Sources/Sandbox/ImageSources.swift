import DiskImage
import ImageCache
import Logging
import Synchronization

/// The images IMAGES_DIR offers: which file serves an image, its cache file when it is not a plain one,
/// and its root partition. Shared by the manager's sandboxes, pristine views and saves.
final class ImageSources: Sendable {
    let directory: String
    /// Where compressed images are decompressed to; nil: only plain images are offered.
    let cache: ImageCache?
    private let settings: SandboxSettings
    private let names: InstanceNames
    private let loops: ReadOnlyLoops
    private let logger: Logger
    /// "NAME: file" pairs already logged as hidden by a file served first.
    private let shadowsLogged = Mutex(Set<String>())

    init(directory: String, cache: ImageCache?, settings: SandboxSettings, names: InstanceNames, loops: ReadOnlyLoops,
         logger: Logger) {
        self.directory = directory
        self.cache = cache
        self.settings = settings
        self.names = names
        self.loops = loops
        self.logger = logger
    }

    /// Every image name a file of the directory offers.
    func offered() -> [String] {
        ImageDirectory.scan(directory).compactMap { served($1, image: $0) != nil ? $0 : nil }
    }

    /// The file that offers `image`; logs once per file when another one, served first, hides it.
    func source(of image: String) -> ImageSource? {
        served(ImageDirectory.sources(of: image, in: directory), image: image)
    }

    private func served(_ sources: [ImageSource], image: String) -> ImageSource? {
        // Without a cache, only plain images are offered.
        let sources = sources.filter { cache != nil || $0.format == .raw }
        guard let first = sources.first else { return nil }
        for hidden in sources.dropFirst() {
            let key = "\(image): \(hidden.path)"
            if shadowsLogged.withLock({ $0.insert(key).inserted }) {
                logger.notice("image \(image): serving \(first.fileName); \(hidden.fileName) is ignored while it exists")
            }
        }
        return first
    }

    /// The cache file of an image that is not a plain one (decompressed, extracted or converted now, or
    /// reused), held in use; nil for a plain image.
    func prepareIfNeeded(_ image: String) throws(SandboxError) -> CachedImage? {
        guard let source = source(of: image) else { throw .noSuchImage(image) }
        guard source.format != .raw else { return nil }
        guard let cache else { throw .noSuchImage(image) }
        return try step("prepare \(source.fileName)") { try cache.prepare(image: image, file: source.path, format: source.format) }
    }

    /// The file the engines read for `image`: its cache file when compressed (nil if not prepared), else the image.
    func backingPath(_ image: String, cached: CachedImage?) -> String? {
        if let cached { return cached.path }
        return source(of: image).flatMap { $0.format == .raw ? $0.path : nil }
    }

    func findRoot(_ image: String, _ path: String) throws(SandboxError) -> RootPartition {
        do {
            return try RootFinder(imageName: image, path: path, override: settings.partition(for: image), logger: logger,
                                  peek: PartitionPeek(names: names, imagePath: path, imageName: image, loops: loops)).choose()
        } catch {
            throw .unusableImage(image, error)
        }
    }
}

/// Serials of sandboxes, partitions and image attachments: never reused while the daemon lives.
final class Serials: Sendable {
    private let next = Atomic<UInt64>(1)

    func take() -> UInt64 { next.wrappingAdd(1, ordering: .relaxed).oldValue }
}
