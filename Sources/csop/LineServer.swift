import CSOPCore
import CSOPHost
import Glibc
import Synchronization

/// `csop run`: requests as JSON lines on stdin, responses (and plugin events) as JSON lines
/// on stdout. Requests run concurrently; responses carry the request id and may come out
/// of order. A malformed line gets an error response. At EOF, in-flight work drains first.
final class LineServer: Sendable {
    /// The longest request line accepted.
    static let maxLineBytes = 128 << 20

    private let host: CSOPHost
    private let output: OutputWriter
    private let maxInFlight: Int
    private let inputFD: Int32
    private let done = ConditionLock()
    private let pending = Atomic<Int>(0)
    private let wakeRead: Int32
    private let wakeWrite: Int32

    /// - Parameter maxInFlight: requests answered-to-be at once; past it the server stops
    ///   reading until one finishes, so a fast producer meets backpressure, not `QUEUE_FULL`.
    init(host: CSOPHost, inputFD: Int32 = 0, outputFD: Int32 = 1, maxInFlight: Int = 1024) {
        self.host = host
        self.maxInFlight = max(1, maxInFlight)
        self.inputFD = inputFD
        self.output = OutputWriter(fd: outputFD)
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    /// Stops reading as if input had ended; in-flight work still drains. Safe from any thread.
    func stop() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    /// Waits until stdin is readable; false when ``stop()`` was called.
    private func waitForInput() -> Bool {
        var fds = [pollfd(fd: inputFD, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
        while true {
            let n = poll(&fds, 2, -1)
            if n < 0 && errno == EINTR { continue }
            return fds[1].revents == 0
        }
    }

    /// Serves until EOF and every response is written. Blocks the calling thread.
    func serve() {
        let listener = host.addEventListener { [output] event in output.writeLine(event.json.bytes) }
        defer { host.removeEventListener(listener) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var start = 0
        var end = 0
        var scanned = 0
        var discarding = false
        readLoop: while true {
            if end == buffer.count {
                if start > 0 {
                    buffer.replaceSubrange(0..<(end - start), with: buffer[start..<end])
                    end -= start
                    scanned -= start
                    start = 0
                } else if buffer.count < Self.maxLineBytes {
                    buffer.append(contentsOf: repeatElement(0, count: buffer.count))
                } else {
                    // A line longer than the limit: answer once, skip to its end.
                    respondToOversizedLine()
                    discarding = true
                    start = 0
                    end = 0
                    scanned = 0
                }
            }
            guard waitForInput() else { break readLoop }
            let count = buffer.withUnsafeMutableBytes { raw in read(inputFD, raw.baseAddress! + end, raw.count - end) }
            if count < 0 {
                if errno == EINTR { continue }
                break readLoop
            }
            if count == 0 {
                if start < end && !discarding { handle(Array(buffer[start..<end])) }
                break readLoop
            }
            end += count
            output.beginBatch()
            while let newline = buffer[scanned..<end].firstIndex(of: 0x0A) {
                if discarding {
                    discarding = false
                } else {
                    handle(Array(buffer[start..<newline]))
                }
                start = newline + 1
                scanned = start
            }
            scanned = end
            output.endBatch()
            if start == end {
                start = 0
                end = 0
                scanned = 0
            }
        }
        done.withLock {
            while pending.load(ordering: .acquiring) > 0 { done.wait() }
        }
    }

    private nonisolated(unsafe) var lineNumber = 0  // Only the reading thread touches it.

    private func handle(_ line: [UInt8]) {
        lineNumber += 1
        var line = line
        if line.last == 0x0D { line.removeLast() }
        guard line.contains(where: { $0 != 0x20 && $0 != 0x09 }) else { return }
        if pending.load(ordering: .acquiring) >= maxInFlight {
            output.endBatch()
            done.withLock {
                while pending.load(ordering: .acquiring) >= maxInFlight { done.wait() }
            }
            output.beginBatch()
        }
        pending.add(1, ordering: .relaxed)
        host.dispatch(json: line, line: lineNumber) { [self] response in
            output.writeLine(response.serialized())
            let left = pending.subtract(1, ordering: .acquiringAndReleasing).newValue
            if left == 0 || left == maxInFlight - 1 {
                done.withLock { done.broadcast() }
            }
        }
    }

    private func respondToOversizedLine() {
        let error = CSOPError(.invalidPayload, "request line is longer than \(Self.maxLineBytes) bytes; split the work into smaller requests")
        output.writeLine(Response(id: Request.generateID(), outcome: .failure(error), duration: 0).serialized())
    }
}
