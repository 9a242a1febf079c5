@testable import CSOPHost
import Glibc
import Synchronization
import Testing

/// A scheduler whose time moves only when the test says so.
final class ManualScheduler: Scheduler, Sendable {
    private final class Timer: ScheduledTimer, Sendable {
        let cancelled = Atomic<Bool>(false)
        func cancel() { cancelled.store(true, ordering: .relaxed) }
    }

    private struct Pending {
        var deadline: Double
        var timer: Timer
        var work: @Sendable () -> Void
    }

    private let state = Mutex<(now: Double, pending: [Pending], delays: [Double])>((0, [], []))

    func now() -> Double { state.withLock { $0.now } }

    /// Every delay that was scheduled, in order.
    var scheduledDelays: [Double] { state.withLock { $0.delays } }

    func schedule(after milliseconds: Double, _ work: @escaping @Sendable () -> Void) -> any ScheduledTimer {
        let timer = Timer()
        state.withLock { state in
            state.pending.append(Pending(deadline: state.now + milliseconds, timer: timer, work: work))
            state.delays.append(milliseconds)
        }
        return timer
    }

    /// Moves time forward, running due timers in deadline order (including ones they schedule).
    func advance(by milliseconds: Double) {
        let target = state.withLock { $0.now + milliseconds }
        while true {
            let next: Pending? = state.withLock { state in
                guard let index = state.pending.indices.filter({ state.pending[$0].deadline <= target })
                    .min(by: { state.pending[$0].deadline < state.pending[$1].deadline })
                else { return nil }
                let entry = state.pending.remove(at: index)
                state.now = max(state.now, entry.deadline)
                return entry
            }
            guard let next else { break }
            if !next.timer.cancelled.load(ordering: .relaxed) { next.work() }
        }
        state.withLock { $0.now = target }
    }
}

/// A capability scripted by the test: each attempt's outcome, or nil to never complete.
final class ScriptedCapability: Capability, Sendable {
    let name = "fake"
    let version = "1"
    let operations = ["run", "other"]
    private let script = Mutex<[Result<RawJSON, CSOPError>?]>([])
    let invocations = Mutex<[UInt64]>([])
    let callers = Mutex<[Caller?]>([])
    let cancelled = Mutex<[UInt64]>([])
    let held = Mutex<[Attempt]>([])

    init(_ outcomes: [Result<RawJSON, CSOPError>?]) { script.withLock { $0 = outcomes } }

    func invoke(
        callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double, caller: Caller?, _ attempt: Attempt
    ) {
        invocations.withLock { $0.append(callID) }
        callers.withLock { $0.append(caller) }
        let next = script.withLock { $0.isEmpty ? .success(.null) : $0.removeFirst() }
        if let next { attempt.complete(next) } else { held.withLock { $0.append(attempt) } }
    }

    func cancel(callID: UInt64) { cancelled.withLock { $0.append(callID) } }
}

/// Collects responses from the callback API.
final class ResponseBox: Sendable {
    let responses = Mutex<[Response]>([])
    func callback() -> @Sendable (Response) -> Void { { [self] r in responses.withLock { $0.append(r) } } }
    var only: Response? { responses.withLock { $0.count == 1 ? $0[0] : nil } }
    var count: Int { responses.withLock { $0.count } }
}

/// A capability that works inline on the caller's thread until it is cancelled, like a
/// SQLite query waiting on a lock.
final class BlockingCapability: Capability, Sendable {
    let name = "block"
    let version = "1"
    let operations = ["wait"]
    let lock = ConditionLock()
    nonisolated(unsafe) var cancelledIDs: [UInt64] = []  // Guarded by `lock`.

    func invoke(
        callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double, caller: Caller?, _ attempt: Attempt
    ) {
        lock.withLock { while !cancelledIDs.contains(callID) { lock.wait() } }
        attempt.complete(.failure(CSOPError(.executionFailed, "interrupted")))
    }

    func cancel(callID: UInt64) {
        lock.withLock {
            cancelledIDs.append(callID)
            lock.broadcast()
        }
    }
}

@Suite struct RouterTests {
    @Test func timeoutInterruptsWorkRunningInlineInInvoke() {
        let capability = BlockingCapability()
        let router = Router(capabilities: [capability], scheduler: TimerThread.shared)
        let box = ResponseBox()
        router.dispatch(Request(action: "block.wait", options: RequestOptions(timeout: 30)), completion: box.callback())
        // The timer thread answers; it may finish just after invoke returns here.
        for _ in 0..<5000 where box.count == 0 { usleep(1000) }
        #expect(box.only?.error?.code == .timeout)
        #expect(capability.lock.withLock { capability.cancelledIDs.count } == 1)
    }

    let retryable = CSOPError(.executionFailed, "flaky", retryable: true)

    func router(_ capability: ScriptedCapability, _ scheduler: ManualScheduler, random: Double = 1) -> Router {
        Router(capabilities: [capability], scheduler: scheduler, backoff: .standard, random: { random })
    }

    @Test func retriesRetryableFailuresWithExponentialBackoff() {
        let capability = ScriptedCapability([.failure(retryable), .failure(retryable), .failure(retryable), .success(RawJSON(["ok": true]))])
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run", options: RequestOptions(timeout: 1000, retry: 3)), completion: box.callback())
        #expect(scheduler.scheduledDelays == [1000, 100])
        #expect(box.count == 0)
        scheduler.advance(by: 100)
        scheduler.advance(by: 200)
        #expect(box.count == 0)
        scheduler.advance(by: 400)
        #expect(box.only?.data == ["ok": true])
        #expect(capability.invocations.withLock { $0.count } == 4)
        #expect(scheduler.scheduledDelays == [1000, 100, 1000, 200, 1000, 400, 1000])
        #expect(box.only?.duration == 700)
    }

    @Test func jitterShortensTheWaitUpToHalf() {
        let capability = ScriptedCapability([.failure(retryable), .failure(retryable), .success(.null)])
        let scheduler = ManualScheduler()
        router(capability, scheduler, random: 0).dispatch(Request(action: "fake.run", options: RequestOptions(retry: 5)), completion: ResponseBox().callback())
        scheduler.advance(by: 1000)
        #expect(scheduler.scheduledDelays.filter { $0 != RequestOptions.defaultTimeout } == [50, 100])
    }

    @Test func stopsAfterTheRetryBudgetAndReportsTheLastError() {
        let capability = ScriptedCapability(Array(repeating: .failure(retryable), count: 10))
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run", options: RequestOptions(retry: 2)), completion: box.callback())
        scheduler.advance(by: 10_000)
        #expect(box.only?.error?.code == .executionFailed)
        #expect(box.only?.error?.retryable == true)
        #expect(capability.invocations.withLock { $0.count } == 3)
    }

    @Test func neverRetriesErrorsThatCannotSucceed() {
        let mislabelled = CSOPError(.invalidPayload, "bad key", retryable: true)
        let capability = ScriptedCapability([.failure(mislabelled), .success(.null)])
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run", options: RequestOptions(retry: 5)), completion: box.callback())
        #expect(box.only?.error?.code == .invalidPayload)
        #expect(box.only?.error?.retryable == false)
        #expect(capability.invocations.withLock { $0.count } == 1)
        #expect(scheduler.scheduledDelays == [RequestOptions.defaultTimeout])
    }

    /// The documented rule holds for any plugin's codes, not a fixed list.
    @Test(arguments: ["USER_NOT_FOUND", "INVALID_COUPON", "CONFLICT", "QUOTA_EXCEEDED", "KEY_NOT_FOUND", "FORBIDDEN", "UNAUTHENTICATED"])
    func neverRetriesCodesTheRuleNames(code: String) {
        let capability = ScriptedCapability([.failure(CSOPError(ErrorCode(code), "no", retryable: true)), .success(.null)])
        let box = ResponseBox()
        router(capability, ManualScheduler()).dispatch(Request(action: "fake.run", options: RequestOptions(retry: 3)), completion: box.callback())
        #expect(box.only?.error?.code.rawValue == code)
        #expect(box.only?.error?.retryable == false)
        #expect(capability.invocations.withLock { $0.count } == 1)
    }

    @Test(arguments: ["USER_TEMPORARILY_LOCKED", "NOT_CONNECTED", "NOT_FOUNDATION_READY"])
    func retriesOtherRetryableCodes(code: String) {
        let capability = ScriptedCapability([.failure(CSOPError(ErrorCode(code), "later", retryable: true)), .success(.null)])
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run", options: RequestOptions(retry: 1)), completion: box.callback())
        scheduler.advance(by: 10_000)
        #expect(box.only?.isOK == true)
        #expect(capability.invocations.withLock { $0.count } == 2)
    }

    @Test func doesNotRetryNonRetryableFailures() {
        let capability = ScriptedCapability([.failure(CSOPError(.executionFailed, "boom")), .success(.null)])
        let box = ResponseBox()
        router(capability, ManualScheduler()).dispatch(Request(action: "fake.run", options: RequestOptions(retry: 3)), completion: box.callback())
        #expect(box.only?.error?.message == "boom")
        #expect(capability.invocations.withLock { $0.count } == 1)
    }

    @Test func timeoutCancelsTheAttemptAndIgnoresItsLateCompletion() {
        let capability = ScriptedCapability([nil])
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run", options: RequestOptions(timeout: 250)), completion: box.callback())
        scheduler.advance(by: 249)
        #expect(box.count == 0)
        scheduler.advance(by: 1)
        #expect(box.only?.error?.code == .timeout)
        #expect(box.only?.error?.retryable == true)
        #expect(box.only?.error?.message.contains("250 ms") == true)
        #expect(capability.cancelled.withLock { $0 } == capability.invocations.withLock { $0 })
        for late in capability.held.withLock({ $0 }) { late.complete(.success(.null)) }
        #expect(box.count == 1)
    }

    /// Issue 10: a TIMEOUT must be true. An attempt that began committing before its timeout
    /// is not abandoned: the answer is its outcome, and it is neither cancelled nor retried.
    @Test func aCommitBegunBeforeTheTimeoutIsAnsweredWithItsOutcome() {
        let capability = ScriptedCapability([nil, .success(.null)])
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run", options: RequestOptions(timeout: 100, retry: 3)), completion: box.callback())
        let attempt = capability.held.withLock { $0[0] }
        scheduler.advance(by: 50)
        #expect(attempt.beginCommit())
        scheduler.advance(by: 5_000)
        #expect(box.count == 0)
        #expect(capability.cancelled.withLock { $0.isEmpty })
        attempt.complete(.success(RawJSON(["saved": true])))
        #expect(box.only?.data == ["saved": true])
        #expect(box.only?.duration == 5_050)
        #expect(capability.invocations.withLock { $0.count } == 1)
    }

    /// Once the router answered TIMEOUT, a commit is refused: the plugin must not make the effect.
    @Test func aCommitAfterTheTimeoutIsRefused() {
        let capability = ScriptedCapability([nil])
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run", options: RequestOptions(timeout: 100)), completion: box.callback())
        let attempt = capability.held.withLock { $0[0] }
        scheduler.advance(by: 100)
        #expect(box.only?.error?.code == .timeout)
        #expect(!attempt.beginCommit())
        attempt.complete(.failure(CSOPError(.timeout, "rolled back")))
        #expect(box.count == 1)
    }

    /// A commit that never finishes is answered after the grace, not retried, and says so.
    @Test func aCommitThatNeverFinishesIsAnsweredAsUnknownAfterTheGrace() {
        let capability = ScriptedCapability([nil, .success(.null)])
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run", options: RequestOptions(timeout: 100, retry: 2)), completion: box.callback())
        let attempt = capability.held.withLock { $0[0] }
        #expect(attempt.beginCommit())
        scheduler.advance(by: 100 + Router.commitGrace - 1)
        #expect(box.count == 0)
        scheduler.advance(by: 1)
        let error = box.only?.error
        #expect(error?.code == .timeout)
        #expect(error?.retryable == false)
        #expect(error?.message.contains("may or may not have happened") == true, "\(String(describing: error))")
        #expect(capability.invocations.withLock { $0.count } == 1)
        #expect(capability.cancelled.withLock { $0.isEmpty })
        attempt.complete(.success(.null))
        #expect(box.count == 1)
    }

    /// A commit that finishes in time changes nothing about a normal answer.
    @Test func aCommitWithinTheTimeoutAnswersAsUsual() {
        let capability = ScriptedCapability([nil])
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run", options: RequestOptions(timeout: 100)), completion: box.callback())
        let attempt = capability.held.withLock { $0[0] }
        #expect(attempt.beginCommit())
        attempt.complete(.failure(CSOPError(.executionFailed, "disk full")))
        #expect(box.only?.error?.message == "disk full")
        scheduler.advance(by: 100_000)
        #expect(box.count == 1)
        #expect(!attempt.beginCommit())
    }

    /// Issue 10: the bytes held in requests not yet answered are bounded: past the budget a
    /// request is `QUEUE_FULL` (retryable) until answers free room; one larger than all of it
    /// is `INVALID_PAYLOAD`.
    @Test func theInFlightByteBudgetRefusesWhatWouldPassIt() {
        let capability = ScriptedCapability([nil, .success(.null)])
        let router = Router(capabilities: [capability], scheduler: ManualScheduler(), maxInFlightBytes: 100)
        let payload: JSONValue = ["pad": .string(String(repeating: "x", count: 50))]  // 60 bytes as JSON
        let first = ResponseBox(), second = ResponseBox(), third = ResponseBox(), huge = ResponseBox()
        router.dispatch(Request(action: "fake.run", payload: payload), completion: first.callback())
        #expect(router.inFlightByteCount == 60)
        router.dispatch(Request(action: "fake.run", payload: payload, options: RequestOptions(retry: 3)), completion: second.callback())
        #expect(second.only?.error?.code == .queueFull)
        #expect(second.only?.error?.retryable == true)
        #expect(second.only?.error?.message.contains("budget of 100") == true)
        router.dispatch(Request(action: "fake.run", payload: ["pad": .string(String(repeating: "x", count: 200))]), completion: huge.callback())
        #expect(huge.only?.error?.code == .invalidPayload)
        capability.held.withLock { $0[0] }.complete(.success(.null))
        #expect(first.only?.isOK == true)
        #expect(router.inFlightByteCount == 0)
        router.dispatch(Request(action: "fake.run", payload: payload), completion: third.callback())
        #expect(third.only?.isOK == true)
        #expect(router.inFlightByteCount == 0)
    }

    @Test func timedOutAttemptsAreRetriedAndEachIsCancelled() {
        let capability = ScriptedCapability([nil, nil, .success(RawJSON(.int(3)))])
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run", options: RequestOptions(timeout: 50, retry: 2)), completion: box.callback())
        scheduler.advance(by: 50 + 100 + 50 + 200)
        #expect(box.only?.data == .int(3))
        #expect(capability.cancelled.withLock { $0.count } == 2)
    }

    @Test func aCompletedAttemptCancelsItsTimer() {
        let capability = ScriptedCapability([.success(.null)])
        let scheduler = ManualScheduler()
        let box = ResponseBox()
        router(capability, scheduler).dispatch(Request(action: "fake.run"), completion: box.callback())
        #expect(box.only?.isOK == true)
        #expect(scheduler.scheduledDelays == [5000])
        scheduler.advance(by: 10_000)
        #expect(box.count == 1)
        #expect(capability.cancelled.withLock { $0.isEmpty })
    }

    @Test(arguments: [
        ("fake", ErrorCode.invalidAction), ("fake.nope", .operationNotFound), ("nothing.run", .capabilityNotFound),
    ])
    func reportsRoutingErrors(_ action: String, _ code: ErrorCode) {
        let capability = ScriptedCapability([])
        let box = ResponseBox()
        router(capability, ManualScheduler()).dispatch(Request(id: "x", action: action), completion: box.callback())
        #expect(box.only?.error?.code == code)
        #expect(box.only?.id == "x")
        #expect(capability.invocations.withLock { $0.isEmpty })
    }

    @Test func operationNotFoundListsWhatExists() {
        let box = ResponseBox()
        router(ScriptedCapability([]), ManualScheduler()).dispatch(Request(action: "fake.nope"), completion: box.callback())
        #expect(box.only?.error?.message.contains("run, other") == true)
    }

    @Test func rejectsNonObjectPayloadsAndBadOptions() {
        let box = ResponseBox()
        let router = router(ScriptedCapability([]), ManualScheduler())
        router.dispatch(Request(action: "fake.run", payload: [1, 2]), completion: box.callback())
        router.dispatch(Request(action: "fake.run", options: RequestOptions(timeout: 0)), completion: box.callback())
        router.dispatch(Request(action: "fake.run", options: RequestOptions(retry: 50)), completion: box.callback())
        #expect(box.responses.withLock { $0.map { $0.error?.code } } == [.invalidPayload, .invalidPayload, .invalidPayload])
    }

    @Test func reportsExecutionFailures() {
        let box = ResponseBox()
        router(ScriptedCapability([.failure(.executionFailed("disk on fire"))]), ManualScheduler())
            .dispatch(Request(action: "fake.run"), completion: box.callback())
        #expect(box.only?.error == CSOPError(.executionFailed, "disk on fire"))
    }

    @Test func refusesWorkAfterStopAccepting() {
        let capability = ScriptedCapability([])
        let router = router(capability, ManualScheduler())
        router.stopAccepting()
        let box = ResponseBox()
        router.dispatch(Request(action: "fake.run"), completion: box.callback())
        #expect(box.only?.error?.code == .notInitialized)
        #expect(capability.invocations.withLock { $0.isEmpty })
    }

    @Test func pendingCountTracksUnansweredRequests() {
        let capability = ScriptedCapability([nil])
        let scheduler = ManualScheduler()
        let router = router(capability, scheduler)
        router.dispatch(Request(action: "fake.run", options: RequestOptions(timeout: 10)), completion: ResponseBox().callback())
        #expect(router.pendingCount == 1)
        scheduler.advance(by: 10)
        #expect(router.pendingCount == 0)
    }
}
