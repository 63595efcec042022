import Glibc
import LinuxBlock

/// Adds and frees zram devices, recording each one the serve instance holds, because zram devices cannot
/// carry a name: a crashed instance's devices are found again through the record.
///
/// The record is one empty file per device, `<ledger>/<id>`, so each change is a single atomic create or
/// unlink. It is made right after hot_add and dropped before hot_remove: a record therefore always names a
/// device nobody else can hold (ids are only reused after hot_remove), so a sweep may reset it safely. A crash
/// between those steps leaves at most one unsized device, never a wrong record.
public struct ZramAllocator: Sendable {
    public let zram: Zram
    /// Directory of the records; nil keeps none (tests, tools).
    public let ledger: String?

    public init(zram: Zram = Zram(), ledger: String?) {
        self.zram = zram
        self.ledger = ledger
    }

    /// A new device of `bytes`, recorded; on failure nothing is left.
    public func add(bytes: UInt64) throws -> Int {
        let id = try step("add zram device") { try zram.add() }
        do {
            try step("record zram\(id)") { try record(id) }
        } catch {
            try? zram.remove(id)
            throw error
        }
        do {
            try step("size \(zram.devicePath(id)) to \(bytes) bytes") { try zram.setDisksize(id, bytes: bytes) }
        } catch {
            try? free(id)
            throw error
        }
        return id
    }

    /// Resets (frees the memory), drops the record, removes the device.
    public func free(_ id: Int) throws {
        try zram.reset(id)
        try forget(id)
        try zram.remove(id)
    }

    /// `free` for a teardown: a reset answering EBUSY is retried for a few seconds (BusyRetry), since what holds
    /// the device then (another namespace's copy of its mount, a final release still running) often lets go
    /// by itself; the error names the holders.
    public func release(_ id: Int) throws {
        try BusyRetry.releasing("zram\(id)") { () throws(SystemError) in try zram.reset(id) }
        try free(id)
    }

    /// Ids recorded in `ledger` (a live or a dead instance's), ascending.
    public static func recorded(in ledger: String) -> [Int] {
        FileIO.list(ledger).compactMap { Int($0) }.sorted()
    }

    private func record(_ id: Int) throws(SystemError) {
        guard let ledger else { return }
        try PrivateDirectory.create(ledger)
        let path = "\(ledger)/\(id)"
        _ = try FileDescriptor.open(path, O_CREAT | O_WRONLY | O_NOFOLLOW, mode: 0o600)
    }

    func forget(_ id: Int) throws(SystemError) {
        guard let ledger else { return }
        let path = "\(ledger)/\(id)"
        guard unlink(path) == 0 || errno == ENOENT else { throw SystemError("unlink", path, errno: errno) }
    }
}

extension ZramAllocator {
    /// A zram device of `bytes` opened read-write as a raw block store; `teardown` closes and frees it.
    func blockStore(bytes: UInt64, teardown: Teardown) throws -> Int32 {
        let id = try add(bytes: (bytes + 4095) / 4096 * 4096)
        teardown.push("remove zram\(id)") { try release(id) }
        let path = zram.devicePath(id)
        return teardown.own(try FileDescriptor.open(path, O_RDWR), path)
    }
}
