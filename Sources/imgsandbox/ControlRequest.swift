import FoundationEssentials
import Glibc
import ImageCache
import Sandbox
import SandboxDiff
import SandboxSave

/// What a client asks the daemon over the control socket; JSON keys in snake_case.
struct ControlRequest: Codable {
    var command: String
    var image: String?
    var sandbox: String?
    var output: String?
    var force: Bool?
    var shrink: Bool?
    /// save: the caller's umask, which OUT's mode follows.
    var umask: UInt32?

    static let status = ControlRequest(command: "status")
}

/// The answer to a diff request: the changes, or why there are none.
struct DiffAnswer: Codable {
    var changes: [Change]?
    var error: String?
    var errno: Int32?
}

/// One line of a save's answer: progress, then the result or the error.
struct SaveLine: Codable {
    var progress: SaveProgress?
    var result: SaveResult?
    var error: String?
    var errno: Int32?
}

/// A failed request's answer.
struct ErrorAnswer: Codable {
    var error: String
    var errno: Int32
}

/// Serves one control connection in the daemon.
struct ControlHandler: Sendable {
    let manager: SandboxManager
    let mountpoint: String
    /// The FUSE data path the kernel agreed to (passthrough, splice, copy), for status rows.
    let dataPath: @Sendable () -> String
    /// The FUSE requests received per operation, for the `daemons` row.
    let fuseRequests: @Sendable () -> [String: UInt64]

    func handle(_ data: Data, send: ControlSocket.Send) {
        let request = data.isEmpty ? .status : (try? StatusRow.decoder.decode(ControlRequest.self, from: data))
        guard let request else {
            _ = send(encode(ErrorAnswer(error: "unreadable request", errno: EINVAL)))
            return
        }
        switch request.command {
        case "status":
            let rows = manager.status().map { StatusRow(mountpoint: mountpoint, dataPath: dataPath(), $0) }
            let preparing = manager.preparations().map { PreparingRow(mountpoint: mountpoint, $0) }
            let daemon = DaemonRow(mountpoint: mountpoint, fuseRequests: fuseRequests())
            let document = StatusRow.Document(sandboxes: rows, preparing: preparing, daemons: [daemon])
            _ = send((try? StatusRow.encoder.encode(document)) ?? Data())
        case "diff":
            guard let image = request.image, let sandbox = request.sandbox else {
                _ = send(encode(ErrorAnswer(error: "diff needs image and sandbox", errno: EINVAL)))
                return
            }
            do {
                _ = send(encode(DiffAnswer(changes: try manager.diff(image: image, name: sandbox))))
            } catch {
                _ = send(encode(DiffAnswer(error: error.description, errno: error.errno)))
            }
        case "save":
            save(request, send: send)
        default:
            _ = send(encode(ErrorAnswer(error: "unknown command \(request.command)", errno: EINVAL)))
        }
    }

    private func encode(_ value: some Encodable) -> Data {
        (try? StatusRow.encoder.encode(value)) ?? Data()
    }

    /// One compact JSON line per progress step (at most four a second), then the outcome.
    private func save(_ request: ControlRequest, send: ControlSocket.Send) {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        func line(_ value: SaveLine) -> Bool { send(((try? encoder.encode(value)) ?? Data()) + Data([10])) }
        guard let image = request.image, let sandbox = request.sandbox, let output = request.output else {
            _ = line(SaveLine(error: "save needs image, sandbox and output", errno: EINVAL))
            return
        }
        var last = ContinuousClock.now - .seconds(1), lastPhase = ""
        // A client that sends no umask gets an output for root alone.
        let saveRequest = SaveRequest(output: output, force: request.force ?? false, shrink: request.shrink ?? false,
                                      servedTree: mountpoint, umask: request.umask.map { mode_t($0 & 0o777) } ?? 0o077)
        do {
            let result = try SaveJob.run(manager, image: image, name: sandbox, request: saveRequest, logger: manager.logger) { progress in
                let now = ContinuousClock.now
                guard progress.phase != lastPhase || progress.doneBytes == progress.totalBytes
                        || now - last >= .milliseconds(250) else { return true }
                last = now
                lastPhase = progress.phase
                return line(SaveLine(progress: progress))
            }
            _ = line(SaveLine(result: result))
        } catch {
            _ = line(SaveLine(error: error.description, errno: error.errno))
        }
    }
}
