public import CSOPCore

/// A plugin written as an ordinary async Swift type: each call runs in its own task,
/// registered in ``calls``, and a host cancellation cancels that task.
///
/// ```swift
/// final class Greeter: AsyncCSOPPlugin {
///     enum Operation: String, PluginOperation { case greet }
///     static let name = "greeter"
///     static let version = "1.0.0"
///     let calls = CallTaskRegistry()
///     init(config: JSONValue, host: PluginHost) throws(CSOPError) {}
///     func handle(_ operation: Operation, _ call: PluginCall) async throws(CSOPError) -> JSONValue {
///         ["greeting": "hello"]
///     }
/// }
/// ```
/// To answer some operations inline (no task, the fastest path), implement
/// ``CSOPPlugin/invoke(_:_:)`` and hand the others to ``runAsync(_:_:)``.
public protocol AsyncCSOPPlugin: CSOPPlugin {
    /// The plugin's running calls: declare `let calls = CallTaskRegistry()`.
    var calls: CallTaskRegistry { get }

    /// Runs one operation. Throwing a ``CSOPError`` reports it as is; long work should check
    /// `Task.isCancelled` (a timeout cancels the task).
    func handle(_ operation: Operation, _ call: PluginCall) async throws(CSOPError) -> JSONValue
}

extension AsyncCSOPPlugin {
    public func invoke(_ operation: Operation, _ call: PluginCall) { runAsync(operation, call) }

    /// Runs ``handle(_:_:)`` for `call` in a task registered in ``calls``.
    public func runAsync(_ operation: Operation, _ call: PluginCall) {
        calls.complete(call) { () async throws(CSOPError) -> PluginReply in
            .value(try await self.handle(operation, call))
        }
    }

    public func cancel(callID: UInt64) { calls.cancel(callID) }

    public func shutdown() { calls.cancelAll() }
}
