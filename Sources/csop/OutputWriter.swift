import CSOPCLISupport
import CSOPCore
import CSOPHost
import Glibc
import Synchronization

/// Serializes whole lines onto a file descriptor from any thread. While the reader is
/// working through a chunk of input (``beginBatch(writingEvery:)`` to ``endBatch()``) lines
/// are buffered and written a few at a time, so a burst of requests costs a few write(2)
/// calls, not one each.
///
/// When a write fails (the reader went away: EPIPE), the writer is closed for good: later
/// lines are dropped and `onClosed` runs once, so the caller can stop taking input.
final class OutputWriter: Sendable {
    private struct State {
        var buffer: [UInt8] = []
        /// Lines in `buffer`.
        var lines = 0
        var batching = false
        /// Lines a batch holds at most before they are written.
        var batchLines = Int.max
        var closed = false
    }

    private let fd: Int32
    private let state = Mutex(State())
    private let onClosed: @Sendable () -> Void

    init(fd: Int32, onClosed: @escaping @Sendable () -> Void = {}) {
        self.fd = fd
        self.onClosed = onClosed
    }

    /// Whether a write failed and output stopped.
    var isClosed: Bool { state.withLock { $0.closed } }

    /// Writes `line` followed by a newline.
    func writeLine(_ line: [UInt8]) {
        append { $0.append(contentsOf: line) }
    }

    /// Writes `response` as one line, serialized straight into the buffer (no array of its own).
    func writeLine(_ response: Response) {
        append { buffer in
            var writer = JSONWriter(capacity: 0)
            swap(&writer.bytes, &buffer)
            response.write(to: &writer)
            swap(&writer.bytes, &buffer)
        }
    }

    private func append(_ line: (inout [UInt8]) -> Void) {
        let closedNow = state.withLock { state in
            guard !state.closed else { return false }
            line(&state.buffer)
            state.buffer.append(0x0A)
            state.lines += 1
            return !state.batching || state.lines >= state.batchLines || state.buffer.count > 1 << 16 ? flush(&state) : false
        }
        if closedNow { onClosed() }
    }

    /// Buffers lines until ``endBatch()``, writing them every `lines` lines meanwhile.
    func beginBatch(writingEvery lines: Int) {
        state.withLock { state in
            state.batching = true
            state.batchLines = max(1, lines)
        }
    }

    func endBatch() {
        let closedNow = state.withLock { state in
            state.batching = false
            return flush(&state)
        }
        if closedNow { onClosed() }
    }

    /// Writes the buffer. - Returns: true when this write failed and closed the writer.
    private func flush(_ state: inout State) -> Bool {
        guard !state.buffer.isEmpty, !state.closed else { return false }
        let written = writeAll(fd, state.buffer)
        state.lines = 0
        state.buffer.removeAll(keepingCapacity: state.buffer.count < 1 << 20)
        if !written {
            state.closed = true
            state.buffer = []
        }
        return !written
    }
}
