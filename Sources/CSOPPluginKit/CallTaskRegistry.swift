public import CSOPCore
import Synchronization

/// A plugin's running calls by call id, so that ``CSOPPlugin/cancel(callID:)`` reaches the
/// right task and ``CSOPPlugin/shutdown()`` can stop them all.
///
/// A task is created and registered under one lock, before it can run, and removes itself
/// when it finishes: a fast task never leaves a dead entry behind. Thread-safe.
public final class CallTaskRegistry: Sendable {
    private let tasks = Mutex<[UInt64: Task<Void, Never>]>([:])

    public init() {}

    /// Runs `body` in a new task registered under `callID` until it finishes.
    public func run(_ callID: UInt64, _ body: @escaping @Sendable () async -> Void) {
        tasks.withLock { tasks in
            tasks[callID] = Task { [weak self] in
                await body()
                self?.remove(callID)
            }
        }
    }

    /// Runs `work` in a registered task and completes `call` with its outcome.
    public func complete(_ call: PluginCall, _ work: @escaping @Sendable () async throws(CSOPError) -> PluginReply) {
        run(call.id) {
            do throws(CSOPError) {
                call.succeed(try await work())
            } catch {
                call.fail(error)
            }
        }
    }

    /// Cancels the task of `callID`. - Returns: whether one was running.
    @discardableResult
    public func cancel(_ callID: UInt64) -> Bool {
        guard let task = tasks.withLock({ $0[callID] }) else { return false }
        task.cancel()
        return true
    }

    /// Cancels every running task.
    public func cancelAll() {
        for task in tasks.withLock({ Array($0.values) }) { task.cancel() }
    }

    /// Tasks registered and not yet finished.
    public var count: Int { tasks.withLock { $0.count } }

    private func remove(_ callID: UInt64) {
        _ = tasks.withLock { $0.removeValue(forKey: callID) }
    }
}
