// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "imgsandbox",
    products: [
        .executable(name: "imgsandbox", targets: ["imgsandbox"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // libfuse3 through pkg-config; shim.h sets FUSE_USE_VERSION and wraps macros.
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // What Swift cannot import: ioctl request numbers, struct dm_ioctl, _GNU_SOURCE calls.
        .target(name: "CLinux"),
        // Pure Swift image model: partition tables, filesystem sniffing. No privileges.
        .target(name: "DiskImage"),
        // Pure Swift FAT12/16/32 reader/writer over a block-level COW overlay (served through FUSE).
        .target(name: "FATFS"),
        // Thin typed wrappers over loop, device-mapper, zram, mount.
        .target(name: "LinuxBlock", dependencies: ["CLinux"]),
        // Names from images and users as safe one-line text (\xNN escapes), for every message that prints one.
        .target(name: "PrintableText"),
        // What a sandbox changed: tree comparison, overlay change sets, FAT volumes compared (imgsandbox diff).
        .target(name: "SandboxDiff", dependencies: ["CLinux", "FATFS", "PrintableText"]),
        // liblzma, zlib, libzstd, libbz2 (Debian's -dev packages) + shim.h for their macros.
        .systemLibrary(name: "CCompression", providers: [.apt(["liblzma-dev", "zlib1g-dev", "libzstd-dev", "libbz2-dev"])]),
        // libarchive (Debian's libarchive-dev): .zip, .7z, .tar.* holding an image. Linked by its module map,
        // not pkg-config: SwiftPM would put -L/usr/lib/x86_64-linux-gnu ahead of Tools/libfuse's libfuse.
        .systemLibrary(name: "CArchive", providers: [.apt(["libarchive-dev"])]),
        // libseccomp (no pkgConfig: its -L/usr/lib would put the system's libfuse3 before Tools/libfuse's),
        // and the system call filter bubblewrap loads for `run` and for the cache's qemu-img.
        .systemLibrary(name: "CSeccomp", providers: [.apt(["libseccomp-dev"])]),
        .target(name: "SyscallFilter", dependencies: ["CLinux", "CSeccomp", "LinuxBlock"]),
        // Compressed images, archives and VM disks (qemu-img): made raw once into a sparse cache file,
        // reused, evicted least recently used first.
        .target(name: "ImageCache", dependencies: [
            "CCompression", "CArchive", "CLinux", "LinuxBlock", "PrintableText", "SyscallFilter",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Engines (dm, overlay) and the sandbox manager.
        .target(name: "Sandbox", dependencies: [
            "DiskImage", "FATFS", "LinuxBlock", "PrintableText", "SandboxDiff", "ImageCache",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // `imgsandbox save`: the save job, which writes a sandbox's changes into a copy of its image; above
        // Sandbox (it reads the sandbox through the manager), called by the executable's control socket.
        .target(name: "SandboxSave", dependencies: [
            "CLinux", "DiskImage", "FATFS", "LinuxBlock", "PrintableText", "Sandbox", "SandboxDiff",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The FUSE layer: virtual tree and passthrough.
        .target(name: "SandboxFS", dependencies: [
            "CFuse", "CLinux", "DiskImage", "FATFS", "LinuxBlock", "Sandbox", "SandboxDiff",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // `imgsandbox run`: the confinement policy bubblewrap applies, the pty relay, foreign-architecture checks.
        .target(name: "SandboxRun", dependencies: ["CLinux", "LinuxBlock", "PrintableText", "Sandbox", "SyscallFilter"]),
        .executableTarget(name: "imgsandbox", dependencies: [
            "Sandbox", "SandboxFS", "SandboxDiff", "SandboxRun", "SandboxSave", "DiskImage", "PrintableText", "LinuxBlock", "CLinux", "ImageCache",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // What the test targets share: one seeded generator, errno helpers.
        .target(name: "TestSupport", path: "Tests/TestSupport"),   // no dependencies: every test target may use it
        // A seeded random sequence of every mutating file operation through a mount (the change journal's tests).
        .target(name: "RandomMutations", dependencies: ["CLinux", "TestSupport"], path: "Tests/RandomMutations"),
        .testTarget(name: "DiskImageTests", dependencies: ["DiskImage", "TestSupport"],
                    exclude: ["Fixtures"]),   // read by path (LVMTests, Tools/fuzz-parsers), not a bundle resource
        .testTarget(name: "FATFSTests", dependencies: ["FATFS", "TestSupport"]),
        .testTarget(name: "LinuxBlockTests", dependencies: ["LinuxBlock", "TestSupport"]),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "FATFS", "TestSupport"]),
        .testTarget(name: "SandboxDiffTests", dependencies: ["SandboxDiff", "CLinux", "PrintableText", "TestSupport"]),
        .testTarget(name: "SandboxRunTests", dependencies: ["SandboxRun", "Sandbox", "SyscallFilter"]),
        .testTarget(name: "ImageCacheTests", dependencies: ["ImageCache", "TestSupport"]),
        .testTarget(name: "SandboxSaveTests", dependencies: ["SandboxSave", "DiskImage", "LinuxBlock", "TestSupport"]),
        .testTarget(name: "SandboxFSTests", dependencies: ["SandboxFS", "Sandbox", "SandboxDiff", "RandomMutations", "TestSupport"]),
        // Drives the built imgsandbox binary as a user would; needs root and /dev/fuse, else skipped.
        .testTarget(name: "IntegrationTests", dependencies: ["LinuxBlock", "RandomMutations", "Sandbox", "SandboxDiff", "SandboxFS", "TestSupport"],
                    exclude: ["Probes"]),   // built or copied into test images by RunConfinementSuite
    ]
)
