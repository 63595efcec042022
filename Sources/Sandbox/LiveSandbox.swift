import DiskImage

/// A ready sandbox as the manager keeps it: its engine attachments, partitions and access guard.
struct LiveSandbox: Sendable {
    var ref: SandboxRef
    let attachment: any EngineAttachment
    /// The image's attachment the sandbox was made on (it outlives the sandbox).
    let image: any EngineAttachment
    let parts: [LivePartition]
    /// The image's root as chosen when the image was attached.
    let root: RootPartition?
    let access = SandboxAccess()

    /// Some of its teardown has run: it must not be served again as if whole.
    var partlyTornDown: Bool { parts.contains { $0.teardown.hasUndone } || attachment.teardown.hasUndone }
}

/// One partition of a live sandbox: a Linux one's engine attachment, or a FAT one's block COW.
struct LivePartition: Sendable {
    let ref: PartitionRef
    let attachment: (any EngineAttachment)?
    /// The partition's engine attachment shared by the image's sandboxes (a Linux partition's).
    var image: (any EngineAttachment)? = nil
    let teardown: Teardown
}
