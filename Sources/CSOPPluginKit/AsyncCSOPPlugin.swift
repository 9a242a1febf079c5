public import CSOPCore
import Synchronization

/// A plugin written as an ordinary async Swift type: each call runs in its own task, and a
/// host cancellation cancels that task.
public protocol AsyncCSOPPlugin: CSOPPlugin {
    /// Runs one operation. Throwing a ``CSOPError`` reports it as is; check
    /// `Task.isCancelled` in long work.
    func handle(operation: String, payload: JSONValue, call: PluginCall) async throws(CSOPError) -> JSONValue
}

extension AsyncCSOPPlugin {
    public func invoke(_ call: PluginCall) {
        let task = Task {
            defer { AsyncCallTasks.shared.remove(call.id) }
            do throws(CSOPError) {
                call.succeed(try await handle(operation: call.operation, payload: call.payload, call: call))
            } catch {
                call.fail(error)
            }
        }
        AsyncCallTasks.shared.insert(call.id, task)
    }

    public func cancel(callID: UInt64) {
        AsyncCallTasks.shared.cancel(callID)
    }
}

/// Running tasks by call id, so a host cancellation reaches the right task.
final class AsyncCallTasks: Sendable {
    static let shared = AsyncCallTasks()

    private let tasks = Mutex<[UInt64: Task<Void, Never>]>([:])

    func insert(_ id: UInt64, _ task: Task<Void, Never>) {
        tasks.withLock { $0[id] = task }
    }

    func remove(_ id: UInt64) {
        _ = tasks.withLock { $0.removeValue(forKey: id) }
    }

    func cancel(_ id: UInt64) {
        tasks.withLock { $0[id] }?.cancel()
    }
}
