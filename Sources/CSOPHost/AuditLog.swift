import Foundation
import Glibc
import Synchronization

/// An append-only JSON-lines audit trail of security-relevant events: requests refused for
/// their caller (`FORBIDDEN`, `UNAUTHENTICATED`), quota refusals, the actions that change what
/// a host runs or deletes (``auditedActions``), plugin loads and load failures, and the
/// gateway's authentication failures.
///
/// One line per event: `{"time", "event", ...}` with `time` in UTC (ISO 8601, milliseconds).
/// A line holds who (`subject`, `tenant`), what (`action`, `plugin`, `file`), the outcome (`ok`
/// or the error code) and the request id — never a payload, a token or a key, and no error
/// message that could repeat them (a plugin's message may quote the payload).
///
/// The file is opened with `O_APPEND` and mode 0600, and each line is one `write`, so lines
/// never interleave. When the next line would take the file past ``maxBytes``, the file is
/// renamed to `PATH.1` (`PATH.1` to `PATH.2`, …, keeping ``keep`` old files) and a new one is
/// started. A write that fails is counted (``failedWrites``) and reported to `onFailure` at most
/// once a minute; it never fails the request it describes.
public final class AuditLog: Sendable {
    /// The actions audited whatever their outcome.
    public static let auditedActions: Set<String> = [
        "compute.register", "compute.unregister", "storage.delete", "storage.sweep", "storage.rotate", "host.reload",
    ]
    /// The outcomes audited whatever the action.
    public static let auditedCodes: Set<String> = ["FORBIDDEN", "UNAUTHENTICATED", "QUOTA_EXCEEDED"]

    public let path: String
    public let maxBytes: Int
    public let keep: Int

    private struct State {
        var descriptor: Int32
        var size: Int
        var failedWrites = 0
        var lastFailureReport: Double = -.infinity
    }

    private let state: Mutex<State>
    private let onFailure: @Sendable (String) -> Void

    /// Opens (creating with mode 0600) the audit log at `path`.
    /// - Parameters:
    ///   - maxBytes: the size past which the file is rotated (at least 4096).
    ///   - keep: rotated files kept beside it (`PATH.1` … `PATH.keep`), 1 to 100.
    ///   - onFailure: told, at most once a minute, that lines could not be written.
    /// - Throws: `INVALID_PAYLOAD` naming the path when it cannot be opened for appending.
    public init(path: String, maxBytes: Int = 64 << 20, keep: Int = 5, onFailure: @escaping @Sendable (String) -> Void = { _ in }) throws(CSOPError) {
        guard maxBytes >= 4096 else { throw .invalidPayload("the audit log's maximum size must be at least 4096 bytes, got \(maxBytes)") }
        guard (1...100).contains(keep) else { throw .invalidPayload("the audit log keeps 1 to 100 rotated files, not \(keep)") }
        self.path = path
        self.maxBytes = maxBytes
        self.keep = keep
        self.onFailure = onFailure
        let (descriptor, size) = try Self.open(path)
        state = Mutex(State(descriptor: descriptor, size: size))
    }

    deinit {
        state.withLock { _ = close($0.descriptor) }
    }

    /// Lines that could not be written.
    public var failedWrites: Int { state.withLock { $0.failedWrites } }

    /// Appends one event. `fields` are written after `time` and `event`, in order; nil values
    /// are left out.
    public func record(_ event: String, _ fields: KeyValuePairs<String, String?>) {
        var writer = JSONWriter(capacity: 192)
        writer.append("{\"time\":")
        writer.writeString(WallClock.iso8601())
        writer.append(",\"event\":")
        writer.writeString(event)
        for (name, value) in fields {
            guard let value else { continue }
            writer.append(",")
            writer.writeString(name)
            writer.append(":")
            writer.writeString(value)
        }
        writer.append("}\n")
        write(writer.bytes)
    }

    /// A request's outcome, when its action or outcome is audited.
    func record(request: Request, outcome: Result<RawJSON, CSOPError>) {
        let code: String
        switch outcome {
        case .success: code = "ok"
        case .failure(let error): code = error.code.rawValue
        }
        guard Self.auditedActions.contains(request.action) || Self.auditedCodes.contains(code) else { return }
        record(
            "request",
            [
                "action": request.action, "outcome": code, "subject": request.caller?.subject, "tenant": request.caller?.tenant,
                "requestId": request.id,
            ])
    }

    private func write(_ line: [UInt8]) {
        state.withLock { state in
            if state.size + line.count > maxBytes, state.size > 0 { rotate(&state) }
            let written = line.withUnsafeBytes { Glibc.write(state.descriptor, $0.baseAddress, $0.count) }
            if written == line.count {
                state.size += line.count
                return
            }
            state.failedWrites += 1
            let now = Date().timeIntervalSince1970
            if now - state.lastFailureReport >= 60 {
                state.lastFailureReport = now
                let count = state.failedWrites
                let reason = String(cString: strerror(errno))
                onFailure("the audit log \(path) could not be written (\(reason)); \(count) lines lost so far")
            }
        }
    }

    /// Moves `PATH` to `PATH.1` (and each older file one up, the oldest dropped) and opens a new one.
    private func rotate(_ state: inout State) {
        for index in stride(from: keep - 1, through: 1, by: -1) { rename("\(path).\(index)", "\(path).\(index + 1)") }
        rename(path, "\(path).1")
        do throws(CSOPError) {
            let (descriptor, size) = try Self.open(path)
            close(state.descriptor)
            state.descriptor = descriptor
            state.size = size
        } catch {
            // Keep appending to the renamed file rather than losing lines.
            onFailure(error.message)
        }
    }

    private static func open(_ path: String) throws(CSOPError) -> (Int32, Int) {
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw .invalidPayload("cannot open the audit log \(path) for appending: \(String(cString: strerror(errno)))")
        }
        var info = stat()
        let size = fstat(descriptor, &info) == 0 ? Int(info.st_size) : 0
        return (descriptor, size)
    }
}
