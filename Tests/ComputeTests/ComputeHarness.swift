import CSOPCore
import Foundation
import Synchronization
import Testing

@testable import ComputePlugin

/// A real ComputeService (real threads, real JavaScriptCore) with async calls for tests.
final class ComputeHarness: Sendable {
    let service: ComputeService
    private let nextID = Atomic<UInt64>(1)

    init(_ settings: ComputeConfiguration = ComputeConfiguration(workers: 2)) {
        service = ComputeService(settings: settings)
    }

    /// Joining the workers waits for each to tear down its JavaScriptCore VM, which can take a
    /// while on a loaded machine; a thread of its own keeps that wait off the cooperative pool
    /// every other test runs on.
    deinit {
        let service = service
        Thread { service.shutdown() }.start()
    }

    /// A call id no call has used yet.
    func newCallID() -> UInt64 { nextID.add(1, ordering: .relaxed).newValue }

    /// Starts a call (with `id`, or a new one, and the host's `deadline` for it); returns its id
    /// and a task awaiting the outcome.
    func start(
        _ operation: String, _ payload: JSONValue, id: UInt64? = nil, deadline: UInt64 = .max
    ) -> (id: UInt64, outcome: Task<Result<JSONValue, CSOPError>, Never>) {
        let id = id ?? newCallID()
        let stream = AsyncStream<Result<JSONValue, CSOPError>>.makeStream()
        service.handle(ComputeService.Operation(rawValue: operation)!, payload: payload, callID: id, deadline: deadline) { result in
            stream.continuation.yield(result.map { bytes in (try? JSONValue(parsing: bytes)) ?? .string("<invalid JSON>") })
            stream.continuation.finish()
        }
        let outcome = Task {
            for await result in stream.stream { return result }
            return .failure(CSOPError(.pluginFault, "completed twice or never"))
        }
        return (id, outcome)
    }

    func call(_ operation: String, _ payload: JSONValue) async -> Result<JSONValue, CSOPError> {
        await start(operation, payload).outcome.value
    }

    /// `execute` and return the `result` member, failing the test on an error.
    func result(_ task: String, _ data: JSONValue, timeout: Double? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws -> JSONValue {
        var payload: JSONObject = ["task": .string(task), "data": data]
        if let timeout { payload["options"] = ["timeout": .double(timeout)] }
        let value = try await call("execute", .object(payload)).get()
        return try #require(value["result"], sourceLocation: sourceLocation)
    }

    /// `execute` a custom function body.
    func custom(_ fn: String, args: JSONValue = .null, timeout: Double? = nil) async -> Result<JSONValue, CSOPError> {
        var payload: JSONObject = ["task": "custom", "data": ["fn": .string(fn), "args": args]]
        if let timeout { payload["options"] = ["timeout": .double(timeout)] }
        return await call("execute", .object(payload))
    }

    func error(_ operation: String, _ payload: JSONValue) async -> CSOPError? {
        if case .failure(let error) = await call(operation, payload) { error } else { nil }
    }

    func stats() async throws -> JSONValue { try await call("stats", [:]).get() }
}

extension Result where Failure == CSOPError {
    var error: CSOPError? { if case .failure(let e) = self { e } else { nil } }
}
