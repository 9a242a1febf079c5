public import CSOPCore
import Synchronization

/// A plugin's running calls by call id, so that ``CSOPPlugin/cancel(callID:)`` reaches the
/// right task and ``CSOPPlugin/shutdown()`` can stop them all.
///
/// A task is created and registered under one lock, before it can run, and removes itself
/// when it finishes: a fast task never leaves a dead entry behind. A cancellation that arrives
/// before its call's task was registered (the host's timer can fire while `invoke` is still
/// on its way) is remembered, and the task starts cancelled. Thread-safe.
public final class CallTaskRegistry: Sendable {
    private struct State {
        var tasks: [UInt64: Task<Void, Never>] = [:]
        /// Calls cancelled before they were registered, oldest first (bounded: a cancel that
        /// arrives after its call finished is never claimed).
        var cancelledEarly: [UInt64] = []
    }

    /// How many early cancellations are remembered.
    static let earlyCancellationMemory = 1024

    private let state = Mutex(State())

    public init() {}

    /// Runs `body` in a new task registered under `callID` until it finishes.
    public func run(_ callID: UInt64, _ body: @escaping @Sendable () async -> Void) {
        state.withLock { state in
            let task = Task { [weak self] in
                await body()
                self?.remove(callID)
            }
            if let early = state.cancelledEarly.firstIndex(of: callID) {
                state.cancelledEarly.remove(at: early)
                task.cancel()
            }
            state.tasks[callID] = task
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

    /// Cancels the task of `callID`, or the task it will have if it is not registered yet.
    /// - Returns: whether a registered task was cancelled.
    @discardableResult
    public func cancel(_ callID: UInt64) -> Bool {
        let task = state.withLock { state -> Task<Void, Never>? in
            if let task = state.tasks[callID] { return task }
            if state.cancelledEarly.count >= Self.earlyCancellationMemory { state.cancelledEarly.removeFirst() }
            state.cancelledEarly.append(callID)
            return nil
        }
        task?.cancel()
        return task != nil
    }

    /// Cancels every running task.
    public func cancelAll() {
        for task in state.withLock({ Array($0.tasks.values) }) { task.cancel() }
    }

    /// Tasks registered and not yet finished.
    public var count: Int { state.withLock { $0.tasks.count } }

    private func remove(_ callID: UInt64) {
        _ = state.withLock { $0.tasks.removeValue(forKey: callID) }
    }
}
