import CSOPCore
import Synchronization

/// One `compute.batch`: feeds its tasks to the pool with at most `maxConcurrent` in flight
/// and answers once every task has a result, in input order. The results it keeps are bounded
/// by `maxOutputBytes` together: a task that finishes past it is rejected instead.
final class BatchRun: Sendable {
    /// A batch entry: a job to run, or a task already rejected while parsing.
    enum Entry: Sendable {
        case job(name: String, work: ComputeJob.Work)
        case rejected(name: String, error: CSOPError)

        var name: String {
            switch self {
            case .job(let name, _), .rejected(let name, _): name
            }
        }
    }

    private struct State {
        var results: [Result<TaskOutput, CSOPError>?]
        var next = 0
        var running: [Int: ComputeJob] = [:]
        var stopped: CSOPError?
        var remaining: Int
        /// JSON bytes of the results (and their console lines) kept so far.
        var outputBytes = 0
    }

    private let entries: [Entry]
    private let pool: WorkerPool
    private let maxConcurrent: Int
    private let failFast: Bool
    private let timeout: Double
    private let deadline: UInt64
    private let maxOutputBytes: Int
    private let state: Mutex<State>
    private let reply: @Sendable ([UInt8]) -> Void

    init(
        entries: [Entry], pool: WorkerPool, maxConcurrent: Int, failFast: Bool, timeout: Double, deadline: UInt64, maxOutputBytes: Int,
        reply: @escaping @Sendable ([UInt8]) -> Void
    ) {
        self.deadline = deadline
        self.entries = entries
        self.pool = pool
        self.maxConcurrent = maxConcurrent
        self.failFast = failFast
        self.timeout = timeout
        self.maxOutputBytes = maxOutputBytes
        self.reply = reply
        state = Mutex(State(results: Array(repeating: nil, count: entries.count), remaining: entries.count))
    }

    func start() {
        if entries.isEmpty {
            reply(Self.render(entries, []))
            return
        }
        feed()
    }

    /// The router gave up on the batch: stop running tasks and start no more.
    func cancelAll() {
        let running = state.withLock { state -> [ComputeJob] in
            if state.stopped == nil { state.stopped = CSOPError(.cancelled, "the batch was cancelled before this task started") }
            return Array(state.running.values)
        }
        for job in running { pool.cancel(job, CSOPError(.cancelled, "the batch was cancelled while this task ran")) }
        feed()
    }

    /// Starts tasks while there is room, and settles those that must not start.
    private func feed() {
        while true {
            enum Step { case launch(Int, ComputeJob), settle(Int, Result<TaskOutput, CSOPError>), wait }
            let step = state.withLock { state -> Step in
                guard state.next < entries.count else { return .wait }
                let index = state.next
                if let stopped = state.stopped {
                    state.next += 1
                    return .settle(index, .failure(stopped))
                }
                switch entries[index] {
                case .rejected(_, let error):
                    state.next += 1
                    return .settle(index, .failure(error))
                case .job(let name, let work):
                    guard state.running.count < maxConcurrent else { return .wait }
                    state.next += 1
                    let job = ComputeJob(taskName: name, work: work, timeoutMilliseconds: timeout, deadline: deadline) { [self] result in
                        settle(index, result)
                    }
                    state.running[index] = job
                    return .launch(index, job)
                }
            }
            switch step {
            case .wait:
                return
            case .settle(let index, let result):
                settle(index, result, feeding: false)
            case .launch(let index, let job):
                do throws(CSOPError) {
                    try pool.submit(job)
                } catch {
                    settle(index, .failure(error), feeding: false)
                }
            }
        }
    }

    private func settle(_ index: Int, _ result: Result<TaskOutput, CSOPError>, feeding: Bool = true) {
        var withdrawn: (jobs: [ComputeJob], reason: CSOPError)?
        let finished = state.withLock { state -> [Result<TaskOutput, CSOPError>]? in
            state.running[index] = nil
            var result = result
            if case .success(let output) = result {
                if state.outputBytes + output.byteCount > maxOutputBytes {
                    result = .failure(
                        CSOPError(
                            .resourceExhausted,
                            "the batch's results together are larger than \(maxOutputBytes) bytes of JSON (config maxResultBytes), so this one was dropped; split the batch or return less data"
                        ))
                } else {
                    state.outputBytes += output.byteCount
                }
            }
            state.results[index] = result
            state.remaining -= 1
            if case .failure = result, failFast, state.stopped == nil {
                state.stopped = CSOPError(.cancelled, "not started: an earlier task in the batch failed and options.failFast is true")
                withdrawn = (Array(state.running.values), state.stopped!)
            }
            return state.remaining == 0 ? state.results.map { $0! } : nil
        }
        // Outside the lock: a job still queued fails at once, which settles it here again.
        if let withdrawn {
            for job in withdrawn.jobs { pool.withdraw(job, withdrawn.reason) }
        }
        if let finished {
            reply(Self.render(entries, finished))
        } else if feeding {
            feed()
        }
    }

    private static func render(_ entries: [Entry], _ results: [Result<TaskOutput, CSOPError>]) -> [UInt8] {
        let completed = results.reduce(0) { count, result in
            if case .success = result { count + 1 } else { count }
        }
        var writer = JSONWriter(capacity: 64 + results.count * 64)
        writer.append("{\"total\":")
        writer.writeInt(Int64(results.count))
        writer.append(",\"completed\":")
        writer.writeInt(Int64(completed))
        writer.append(",\"failed\":")
        writer.writeInt(Int64(results.count - completed))
        writer.append(",\"results\":[")
        for (i, result) in results.enumerated() {
            if i > 0 { writer.append(",") }
            writer.append("{\"status\":\"")
            switch result {
            case .success: writer.append("fulfilled")
            case .failure: writer.append("rejected")
            }
            writer.append("\",\"task\":")
            writer.writeString(entries[i].name)
            switch result {
            case .success(let output):
                writer.append(",")
                output.writeMembers(to: &writer)
            case .failure(let error):
                writer.append(",\"error\":")
                writer.write(error.json)
            }
            writer.append("}")
        }
        writer.append("]}")
        return writer.bytes
    }
}
