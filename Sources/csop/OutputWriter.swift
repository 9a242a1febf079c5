import CSOPCLISupport
import Glibc
import Synchronization

/// Serializes whole lines onto a file descriptor from any thread. While the reader is
/// working through a chunk of input (``beginBatch()``/``endBatch()``) lines are buffered and
/// written together, so a burst of requests costs a few write(2) calls, not one each.
final class OutputWriter: Sendable {
    private struct State {
        var buffer: [UInt8] = []
        var batching = false
    }

    private let fd: Int32
    private let state = Mutex(State())

    init(fd: Int32) { self.fd = fd }

    /// Writes `line` followed by a newline.
    func writeLine(_ line: [UInt8]) {
        state.withLock { state in
            state.buffer.append(contentsOf: line)
            state.buffer.append(0x0A)
            if !state.batching || state.buffer.count > 1 << 16 { flush(&state) }
        }
    }

    func beginBatch() { state.withLock { $0.batching = true } }

    func endBatch() {
        state.withLock { state in
            state.batching = false
            flush(&state)
        }
    }

    private func flush(_ state: inout State) {
        guard !state.buffer.isEmpty else { return }
        writeAll(fd, state.buffer)
        state.buffer.removeAll(keepingCapacity: state.buffer.count < 1 << 20)
    }
}
