public import CSOPCore
import CSOPPluginABI
import Synchronization

/// One operation request from the host. Complete it exactly once, from any thread; later
/// completions are ignored.
public final class PluginCall: Sendable {
    /// Unique per host; ``CSOPPlugin/cancel(callID:)`` names calls by it.
    public let id: UInt64
    /// The operation's name, e.g. `"save"`.
    public let operation: String
    /// Index of ``operation`` in the plugin's operation list.
    public let operationIndex: Int
    /// The request payload (always an object).
    public let payload: JSONValue
    /// Milliseconds the host gives this attempt.
    public let timeoutMilliseconds: Double

    // The csop_call is owned by the host and valid until completed.
    private nonisolated(unsafe) let raw: UnsafePointer<csop_call>
    private let completed = Atomic<Bool>(false)

    init(raw: UnsafePointer<csop_call>, payload: JSONValue) {
        self.raw = raw
        self.id = raw.pointee.call_id
        self.operation = String(cString: raw.pointee.operation)
        self.operationIndex = Int(raw.pointee.operation_index)
        self.payload = payload
        self.timeoutMilliseconds = raw.pointee.timeout_ms
    }

    /// Whether the call was already completed.
    public var isCompleted: Bool { completed.load(ordering: .acquiring) }

    /// Marks the point of no return: call it right before an effect that cannot be undone (a
    /// COMMIT, a NOTIFY), at most once, before completing the call.
    ///
    /// - Returns: true when the call is still wanted: the host no longer abandons it at its
    ///   timeout and answers with this call's outcome, so make the effect, then complete.
    ///   False when the host has already answered the call (it timed out): do not make the
    ///   effect (roll back), and complete with any error, which the host discards. A host
    ///   older than this entry point always gets true (its timeout may still answer first).
    public func beginCommit() -> Bool {
        guard !isCompleted else { return false }
        let size = Int(raw.pointee.struct_size)
        guard size >= MemoryLayout<csop_call>.offset(of: \csop_call.begin_commit)! + MemoryLayout<csop_begin_commit_fn>.size,
            let begin = raw.pointee.begin_commit
        else { return true }
        return begin(raw) != 0
    }

    /// Completes with a result value.
    public func succeed(_ value: JSONValue) {
        succeed(rawJSON: value.serialized())
    }

    /// Completes with a result that is already serialized JSON (one JSON value).
    public func succeed(rawJSON bytes: [UInt8]) {
        guard claim() else { return }
        bytes.withUnsafeBufferPointer { buffer in
            var outcome = csop_outcome()
            outcome.struct_size = UInt32(MemoryLayout<csop_outcome>.size)
            outcome.status = Int32(CSOP_STATUS_OK)
            outcome.data = buffer.baseAddress
            outcome.data_length = buffer.count
            raw.pointee.complete(raw, &outcome)
        }
    }

    /// Completes with a reply.
    public func succeed(_ reply: PluginReply) {
        switch reply {
        case .value(let value): succeed(value)
        case .raw(let bytes): succeed(rawJSON: bytes)
        }
    }

    /// Completes with an error.
    public func fail(_ error: CSOPError) {
        guard claim() else { return }
        error.withABIError { error in
            var outcome = csop_outcome()
            outcome.struct_size = UInt32(MemoryLayout<csop_outcome>.size)
            outcome.status = Int32(CSOP_STATUS_ERROR)
            outcome.error = error
            raw.pointee.complete(raw, &outcome)
        }
    }

    /// Completes with a value or an error.
    public func complete(_ result: Result<JSONValue, CSOPError>) {
        switch result {
        case .success(let value): succeed(value)
        case .failure(let error): fail(error)
        }
    }

    /// Completes with serialized JSON or an error.
    public func complete(rawJSON result: Result<[UInt8], CSOPError>) {
        switch result {
        case .success(let bytes): succeed(rawJSON: bytes)
        case .failure(let error): fail(error)
        }
    }

    private func claim() -> Bool {
        !completed.exchange(true, ordering: .acquiringAndReleasing)
    }
}
