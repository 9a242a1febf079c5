import Synchronization

/// The frames waiting to be written to one connection, filled from any thread (completions,
/// plugin events) and drained by the connection: an SSE stream's task awaits ``next()``; a
/// WebSocket's handler is told by `onReady` and takes them with ``take(writable:)`` on its
/// event loop.
///
/// Responses are bounded by the connection's in-flight limit; events are not, so past
/// `maxEventBytes` of events waiting the outbox overflows: the connection then ends saying
/// so, rather than dropping events silently.
final class Outbox: EventSink, Sendable {
    private struct State {
        var frames: [[UInt8]] = []
        var bytes = 0
        /// Requests answered (``complete(_:)``) since the last take.
        var completed = 0
        var waiter: CheckedContinuation<Void, Never>?
        /// `onReady` was called and the frames were not taken since.
        var signalled = false
        var closed = false
        var overflowed = false
        /// Dropped at ``close()``: it may hold the consumer, which holds this outbox.
        var onReady: (@Sendable () -> Void)?
    }

    private let state: Mutex<State>
    private let maxEventBytes: Int

    /// - Parameter onReady: called (on the pushing thread, without a lock held) when frames
    ///   wait and it was not called since the last ``take(writable:)``, and when the outbox
    ///   overflows; never after ``close()``. Nil for a consumer that awaits ``next()``.
    init(maxEventBytes: Int, onReady: (@Sendable () -> Void)? = nil) {
        self.maxEventBytes = maxEventBytes
        self.state = Mutex(State(onReady: onReady))
    }

    /// Queues a response (always kept: the in-flight limit bounds them).
    func push(_ frame: [UInt8]) {
        enqueue(frame, bounded: false, completes: false)
    }

    /// Queues the answer to one request the connection admitted (nil when the answer went
    /// ahead as an event), and counts the request as done.
    func complete(_ frame: [UInt8]?) {
        enqueue(frame, bounded: false, completes: true)
    }

    /// Queues an event.
    func deliver(_ event: [UInt8]) {
        enqueue(event, bounded: true, completes: false)
    }

    private func enqueue(_ frame: [UInt8]?, bounded: Bool, completes: Bool) {
        let (waiter, signal): (CheckedContinuation<Void, Never>?, (@Sendable () -> Void)?) = state.withLock { state in
            guard !state.closed, !state.overflowed else { return (nil, nil) }
            if completes { state.completed += 1 }
            if let frame {
                if bounded && state.bytes + frame.count > maxEventBytes {
                    state.overflowed = true
                    defer { state.waiter = nil }
                    return (state.waiter, state.onReady)
                }
                state.frames.append(frame)
                state.bytes += frame.count
            }
            defer {
                state.waiter = nil
                state.signalled = true
            }
            return (state.waiter, state.signalled ? nil : state.onReady)
        }
        waiter?.resume()
        signal?()
    }

    /// What the connection writes next.
    enum Next {
        /// Frames in order, and how many requests they (and earlier nil answers) complete.
        case frames([[UInt8]], completed: Int)
        /// Events came faster than the client read them.
        case overflowed
        case closed
    }

    /// Takes every waiting frame, without waiting: nil when there is nothing to do. When the
    /// connection is not `writable` only an overflow is reported, and the frames stay (and
    /// `onReady` is not called again until they are taken).
    func take(writable: Bool) -> Next? {
        state.withLock { state in
            if state.overflowed { return .overflowed }
            guard writable else { return nil }
            state.signalled = false
            if !state.frames.isEmpty || state.completed > 0 {
                defer {
                    state.frames.removeAll(keepingCapacity: true)
                    state.bytes = 0
                    state.completed = 0
                }
                return .frames(state.frames, completed: state.completed)
            }
            return state.closed ? .closed : nil
        }
    }

    /// Waits for frames and takes all of them, in order.
    func next() async -> Next {
        while true {
            if let taken = take(writable: true) { return taken }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state in
                    if !state.frames.isEmpty || state.completed > 0 || state.closed || state.overflowed { return true }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    /// No more frames: the consumer ends after writing those queued.
    func close() {
        let waiter = state.withLock { state in
            state.closed = true
            state.onReady = nil
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }
}
