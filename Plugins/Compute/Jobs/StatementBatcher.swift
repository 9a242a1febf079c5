import CSOPCore
import Synchronization

/// Turns many concurrent requests into few statements: items added while a statement runs wait
/// and go together in the next one (at most `maxBatch` at once), so a burst of submits or
/// finished jobs costs one commit — one WAL flush — per batch instead of one per item.
final class StatementBatcher<Item: Sendable, Answer: Sendable>: Sendable {
    typealias Execute = @Sendable ([Item]) async throws(CSOPError) -> [Answer]

    private struct Waiting {
        var item: Item
        var continuation: CheckedContinuation<Result<Answer, CSOPError>, Never>
    }

    private struct State {
        var waiting: [Waiting] = []
        var draining = false
        var stopped = false
    }

    private let state = Mutex(State())
    private let maxBatch: Int

    init(maxBatch: Int) {
        self.maxBatch = maxBatch
    }

    /// Adds `item` to the next statement and returns its answer.
    /// - Parameter execute: runs one statement for the items and answers one value per item, in
    ///   order (every caller of one batcher passes the same).
    func run(_ item: Item, _ execute: @escaping Execute) async throws(CSOPError) -> Answer {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<Answer, CSOPError>, Never>) in
            let start = state.withLock { state -> Bool? in
                guard !state.stopped else { return nil }
                state.waiting.append(Waiting(item: item, continuation: continuation))
                guard !state.draining else { return false }
                state.draining = true
                return true
            }
            switch start {
            case nil: continuation.resume(returning: .failure(CSOPError(.notInitialized, "the compute plugin is shutting down")))
            case true?: Task { await self.drain(execute) }
            case false?: break
            }
        }
        return try result.get()
    }

    /// Fails what waits and everything added later.
    func stop() {
        let waiting = state.withLock { state in
            state.stopped = true
            defer { state.waiting = [] }
            return state.waiting
        }
        for entry in waiting { entry.continuation.resume(returning: .failure(CSOPError(.notInitialized, "the compute plugin is shutting down"))) }
    }

    private func drain(_ execute: Execute) async {
        while true {
            let batch = state.withLock { state -> [Waiting] in
                let count = min(state.waiting.count, maxBatch)
                guard count > 0 else {
                    state.draining = false
                    return []
                }
                defer { state.waiting.removeFirst(count) }
                return Array(state.waiting.prefix(count))
            }
            if batch.isEmpty { return }
            do throws(CSOPError) {
                let answers = try await execute(batch.map(\.item))
                guard answers.count == batch.count else {
                    throw CSOPError(.executionFailed, "the jobs database answered \(answers.count) rows for \(batch.count) items", retryable: true)
                }
                for (entry, answer) in zip(batch, answers) { entry.continuation.resume(returning: .success(answer)) }
            } catch {
                for entry in batch { entry.continuation.resume(returning: .failure(error)) }
            }
        }
    }
}
