import Synchronization

/// The frames waiting to be written to one connection, filled from any thread (completions,
/// plugin events) and drained by the connection's one writer task.
///
/// Responses are bounded by the connection's in-flight limit; events are not, so past
/// `maxEventBytes` of events waiting the outbox overflows: the writer then ends the
/// connection saying so, rather than dropping events silently.
final class Outbox: EventSink, Sendable {
    private struct State {
        var frames: [[UInt8]] = []
        var bytes = 0
        var waiter: CheckedContinuation<Void, Never>?
        var closed = false
        var overflowed = false
    }

    private let state = Mutex(State())
    private let maxEventBytes: Int

    init(maxEventBytes: Int) {
        self.maxEventBytes = maxEventBytes
    }

    /// Queues a response (always kept: the in-flight limit bounds them).
    func push(_ frame: [UInt8]) {
        enqueue(frame, bounded: false)
    }

    /// Queues an event.
    func deliver(_ event: [UInt8]) {
        enqueue(event, bounded: true)
    }

    private func enqueue(_ frame: [UInt8], bounded: Bool) {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            guard !state.closed, !state.overflowed else { return nil }
            if bounded && state.bytes + frame.count > maxEventBytes {
                state.overflowed = true
            } else {
                state.frames.append(frame)
                state.bytes += frame.count
            }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// What the writer does next.
    enum Next {
        case frames([[UInt8]])
        /// Events came faster than the client read them.
        case overflowed
        case closed
    }

    /// Waits for frames and takes all of them, in order.
    func next() async -> Next {
        while true {
            let taken: Next? = state.withLock { state in
                if !state.frames.isEmpty {
                    defer {
                        state.frames.removeAll(keepingCapacity: true)
                        state.bytes = 0
                    }
                    return .frames(state.frames)
                }
                if state.overflowed { return .overflowed }
                if state.closed { return .closed }
                return nil
            }
            if let taken { return taken }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state in
                    if !state.frames.isEmpty || state.closed || state.overflowed { return true }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    /// No more frames: the writer ends after writing those queued.
    func close() {
        let waiter = state.withLock { state in
            state.closed = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }
}

/// Bounds the requests one connection has running: ``acquire()`` suspends the reader while
/// the connection is at its limit, so a client that sends too fast meets TCP backpressure.
final class InFlightGate: Sendable {
    private struct State {
        var running = 0
        var waiter: CheckedContinuation<Void, Never>?
        /// Waiting for `running` to reach 0.
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let limit: Int

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    func acquire() async {
        let admitted = state.withLock { state in
            guard state.running < limit else { return false }
            state.running += 1
            return true
        }
        if admitted { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state in
                if state.running < limit {
                    state.running += 1
                    return true
                }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }

    func release() {
        let (waiter, idle): (CheckedContinuation<Void, Never>?, [CheckedContinuation<Void, Never>]) = state.withLock { state in
            if let waiter = state.waiter {
                // The slot passes straight to the waiting reader.
                state.waiter = nil
                return (waiter, [])
            }
            state.running -= 1
            guard state.running == 0 else { return (nil, []) }
            defer { state.idleWaiters.removeAll() }
            return (nil, state.idleWaiters)
        }
        waiter?.resume()
        for continuation in idle { continuation.resume() }
    }

    /// Returns once no request is running (at once when none is).
    func idle() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state in
                guard state.running > 0 else { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}
