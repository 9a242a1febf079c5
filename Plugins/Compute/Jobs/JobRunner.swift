import CSOPCore
import CSOPPostgres
import Dispatch
import PostgresNIO
import Synchronization

/// Claims jobs from the jobs table and runs them on this host's pool, at most
/// `concurrency` at once.
///
/// Woken at once by NOTIFY when a job is submitted (LISTEN on its own connection, reconnected
/// with backoff when lost), and every `pollInterval` to find jobs whose `runAt` came and to
/// release jobs whose host stopped renewing their lease. While a job runs here its lease is
/// renewed every third of `lease`; a job whose lease was taken over meanwhile is cancelled
/// here. Each host also hears every job's end (NOTIFY) and tells its `compute.watch`es.
final class JobRunner: Sendable {
    private struct State {
        /// Jobs running here: job id → the call id their run has in the pool.
        var running: [Int64: UInt64] = [:]
        /// Jobs of `running` whose run ended and whose end is being recorded.
        var finishing: Set<Int64> = []
        var tasks: [Task<Void, Never>] = []
        var stopped = false
    }

    private let store: JobStore
    private let service: ComputeService
    private let configuration: JobsConfiguration
    private let watches: JobWatches
    private let log: @Sendable (String) -> Void
    private let state = Mutex(State())
    private let wake: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation
    /// Call ids of job runs: above every id the host gives a call.
    private let nextCallID = Atomic<UInt64>(1 << 62)
    /// Attempts run here, for the metrics and tests.
    let started = Atomic<Int>(0)

    init(
        store: JobStore, service: ComputeService, watches: JobWatches, log: @escaping @Sendable (String) -> Void
    ) {
        self.store = store
        self.service = service
        self.configuration = store.configuration
        self.watches = watches
        self.log = log
        (wake, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Starts listening; with `run`, also claiming and running jobs.
    func start() {
        var tasks = [Task { await self.listenLoop() }]
        if configuration.run {
            tasks.append(Task { await self.claimLoop() })
            tasks.append(Task { await self.tickLoop() })
            wakeContinuation.yield()
        }
        state.withLock { $0.tasks = tasks }
    }

    /// Jobs running here now.
    var runningCount: Int { state.withLock { $0.running.count } }

    /// Stops claiming, cancels the runs under way and gives their jobs back (`queued`, the
    /// attempt not counted) so another host runs them without waiting for the lease; waits at
    /// most 2 s for the database.
    func shutdown() {
        let (tasks, running) = state.withLock { state in
            state.stopped = true
            defer { state.tasks = [] }
            return (state.tasks, state.running)
        }
        wakeContinuation.finish()
        for task in tasks { task.cancel() }
        for callID in running.values { service.cancel(callID: callID) }
        guard !running.isEmpty else { return }
        let done = DispatchSemaphore(value: 0)
        let store = store
        let ids = Array(running.keys)
        Task.detached {
            _ = try? await store.giveBack(ids: ids)
            done.signal()
        }
        _ = done.wait(timeout: .now() + 2)
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    // MARK: Loops

    private func claimLoop() async {
        for await _ in wake {
            while !isStopped {
                // Claims come in batches: a wake while more than half the room is taken waits
                // for more jobs to end, rather than claiming them one at a time.
                let running = runningCount
                let room = configuration.concurrency - running
                guard room > 0, running == 0 || room * 2 >= configuration.concurrency else { break }
                let claimed: [JobStore.Claimed]
                do throws(CSOPError) {
                    claimed = try await store.claim(limit: min(room, 256))
                } catch {
                    if !isStopped { log("compute jobs: claiming failed (the next wake retries): \(error.message)") }
                    break
                }
                if claimed.isEmpty { break }
                for job in claimed { run(job) }
                if claimed.count < min(room, 256) { break }
            }
        }
    }

    /// Every `pollInterval`: wake the claim loop (jobs whose `runAt` came) and release expired
    /// leases. Every third of `lease`: renew this host's leases.
    private func tickLoop() async {
        var lastRenew = monotonicMilliseconds()
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(configuration.pollInterval))
            if Task.isCancelled { return }
            if monotonicMilliseconds() - lastRenew >= Double(configuration.lease) / 3 {
                lastRenew = monotonicMilliseconds()
                await renew()
            }
            do throws(CSOPError) {
                _ = try await store.releaseExpired()
            } catch {
                log("compute jobs: releasing expired leases failed: \(error.message)")
            }
            wakeContinuation.yield()
        }
    }

    private func renew() async {
        let running = state.withLock { $0.running }
        guard !running.isEmpty else { return }
        do throws(CSOPError) {
            let held = try await store.renew(ids: Array(running.keys))
            // A job whose end was recorded meanwhile is no longer running anywhere: not a takeover.
            let stillRunning = state.withLock { state in running.filter { state.running[$0.key] != nil && !state.finishing.contains($0.key) } }
            for (id, callID) in stillRunning where !held.contains(id) {
                // Another host took it over after our lease expired: stop running it here.
                log("compute jobs: job \(id) was taken over by another host; stopping its run here")
                service.cancel(callID: callID)
            }
        } catch {
            log("compute jobs: renewing leases failed (retried next round): \(error.message)")
        }
    }

    /// LISTENs for new jobs (wakes the claim loop) and ended ones (emits `compute.job.done`).
    private func listenLoop() async {
        let backoff = BackoffPolicy(baseMilliseconds: 100, capMilliseconds: 5_000, jitter: 0.5)
        var attempt = 0
        while !Task.isCancelled && !isStopped {
            do {
                let connection = try await store.connect()
                defer { connection.closeInBackground() }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try await connection.listen(on: self.configuration.wakeChannel) { notifications in
                            for try await _ in notifications { self.wakeContinuation.yield() }
                        }
                    }
                    group.addTask {
                        try await connection.listen(on: self.configuration.doneChannel) { notifications in
                            for try await notification in notifications { self.announce(notification.payload) }
                        }
                    }
                    // Anything submitted while this connection was being made is found now.
                    self.wakeContinuation.yield()
                    attempt = 0
                    try await group.next()
                    group.cancelAll()
                }
            } catch {
                if !isStopped && !Task.isCancelled {
                    log("compute jobs: lost the LISTEN connection to \(configuration.postgres.endpoint) (\(PostgresURL.describe(error))); reconnecting")
                }
            }
            if isStopped || Task.isCancelled { return }
            try? await Task.sleep(for: .milliseconds(backoff.delay(afterAttempt: attempt, random: Double.random(in: 0..<1))))
            attempt += 1
        }
    }

    /// `{id, state, tenant?}` objects, alone or in an array, from the done channel → the
    /// watches of each job's tenant.
    private func announce(_ payload: String) {
        let ended: [JSONValue]
        switch try? JSONValue(parsing: payload) {
        case .array(let array)?: ended = array
        case let object?: ended = [object]
        case nil: return
        }
        for job in ended {
            guard case .object(let object) = job, case .string(let id)? = object["id"], case .string(let state)? = object["state"] else { continue }
            let tenant = if case .string(let tenant)? = object["tenant"] { tenant } else { "" }
            watches.ended(id: id, state: state, tenant: tenant)
        }
    }

    // MARK: Running one job

    private func run(_ job: JobStore.Claimed) {
        let callID = nextCallID.add(1, ordering: .relaxed).newValue
        let kept = state.withLock { state -> Bool in
            guard !state.stopped else { return false }
            state.running[job.id] = callID
            return true
        }
        guard kept else { return }
        started.add(1, ordering: .relaxed)
        let data: JSONValue
        do {
            data = try JSONValue(parsing: job.data)
        } catch {
            return finish(job, .failure(CSOPError(.invalidPayload, "the job's stored data is not JSON: \(error)")))
        }
        var options: JSONObject = [:]
        if let timeout = job.timeout { options["timeout"] = .double(timeout) }
        let payload: JSONValue = ["task": .string(job.task), "data": data, "options": .object(options)]
        service.handle(.execute, payload: payload, callID: callID, tenant: job.tenant) { result in
            self.finish(job, result)
        }
    }

    /// Errors no retry can fix end the job at once.
    private static let finalCodes: Set<ErrorCode> = [.invalidPayload, .invalidTask, .quotaExceeded, .forbidden]

    private func finish(_ job: JobStore.Claimed, _ result: Result<[UInt8], CSOPError>) {
        let outcome: JobStore.Outcome
        switch result {
        case .success(let response):
            // The pool answers {result, logs?}: the job keeps its result.
            let value = (try? JSONValue(parsing: response))?["result"] ?? .null
            outcome = .succeeded(result: value.serialized())
        case .failure(let error):
            let exponent = min(max(job.attempt - 1, 0), 20)
            let delay = min(Double(configuration.retryDelay) * Double(1 << exponent), 300_000) * Double.random(in: 0.75...1.25)
            outcome = .failed(error, final: Self.finalCodes.contains(error.code), retryDelay: Int(delay))
        }
        state.withLock { _ = $0.finishing.insert(job.id) }
        Task {
            defer {
                state.withLock { state in
                    state.running[job.id] = nil
                    state.finishing.remove(job.id)
                }
                wakeContinuation.yield()
            }
            if isStopped, case .failure = result {
                // Cancelled by shutdown, which gives the job back without counting the attempt.
                return
            }
            // Recorded while the lease is still renewed (the job stays in `running`); a database
            // that stays away longer than the lease lets another host run the job again.
            for attempt in 0..<10 {
                do throws(CSOPError) {
                    _ = try await store.finish(id: job.id, outcome)
                    break
                } catch {
                    if attempt == 9 || isStopped {
                        log("compute jobs: could not record the end of job \(job.id) (\(error.message)); its lease will expire and another attempt run")
                        break
                    }
                    try? await Task.sleep(for: .milliseconds(100 << min(attempt, 6)))
                }
            }
        }
    }
}
