import CSOPCore
import CSOPHost
import Glibc
import Synchronization

/// `csop run`: requests as JSON lines on stdin, responses (and plugin events) as JSON lines
/// on stdout. Requests run concurrently; responses carry the request id and may come out
/// of order. A malformed line gets an error response; every line gets exactly one answer.
/// At EOF, in-flight work drains first. ``stop()`` (a signal, or stdout closing) stops
/// reading at once: lines already read are answered `NOT_INITIALIZED`, running work drains.
final class LineServer: Sendable {
    /// The longest request line accepted unless `--max-line-bytes` says otherwise.
    static let defaultMaxLineBytes = 128 << 20

    private let host: CSOPHost
    private let output: OutputWriter
    private let maxInFlight: Int
    private let maxLineBytes: Int
    private let inputFD: Int32
    private let done = ConditionLock()
    private let pending = Atomic<Int>(0)
    /// Bytes of the lines in `pending`.
    private let pendingBytes = Atomic<Int>(0)
    private let maxPendingBytes: Int
    /// Set while the reader waits for answers, so completions know to wake it.
    private let readerWaiting = Atomic<Bool>(false)
    private let stopping = StopFlag()
    private let wakeRead: Int32
    private let wakeWrite: Int32

    /// - Parameter maxInFlight: requests answered-to-be at once; past it the server stops
    ///   reading until one finishes, so a fast producer meets backpressure, not `QUEUE_FULL`.
    ///   - maxLineBytes: the longest line; a longer one gets one `INVALID_PAYLOAD` answer.
    init(host: CSOPHost, inputFD: Int32 = 0, outputFD: Int32 = 1, maxInFlight: Int = 1024, maxLineBytes: Int = defaultMaxLineBytes) {
        self.host = host
        self.maxInFlight = max(1, maxInFlight)
        self.maxLineBytes = max(1024, maxLineBytes)
        self.maxPendingBytes = host.maxInFlightBytes
        self.inputFD = inputFD
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        wakeRead = fds[0]
        wakeWrite = fds[1]
        let wake = fds[1]
        let stopping = self.stopping
        output = OutputWriter(fd: outputFD) {
            // Nobody reads the answers any more: stop taking work. The host refuses first, so
            // a line the reader takes once it sees the flag is refused, never run.
            host.stopAccepting()
            stopping.set()
            var byte: UInt8 = 1
            _ = write(wake, &byte, 1)
        }
    }

    /// Whether stdout closed (a write failed) while serving.
    var outputClosed: Bool { output.isClosed }

    /// Stops reading now, as if input had ended: lines already read are refused with
    /// `NOT_INITIALIZED`, in-flight work drains. Safe from any thread, and from a signal watcher.
    func stop() {
        // The host refuses first: a line the reader takes once it sees the flag is refused.
        host.stopAccepting()
        stopping.set()
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        done.withLock { done.broadcast() }
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

    /// Serves until EOF (or ``stop()``) and every response is written. Blocks the calling thread.
    func serve() {
        let listener = host.addEventListener { [output] event in output.writeLine(event.json.bytes) }
        defer { host.removeEventListener(listener) }
        var buffer = [UInt8](repeating: 0, count: min(1 << 16, maxLineBytes))
        var start = 0
        var end = 0
        var scanned = 0
        // Inside a line longer than the limit: it was answered once; skip to its end.
        var discarding = false
        readLoop: while true {
            if end == buffer.count {
                if start > 0 {
                    buffer.replaceSubrange(0..<(end - start), with: buffer[start..<end])
                    end -= start
                    scanned -= start
                    start = 0
                } else if discarding {
                    end = 0
                    scanned = 0
                } else if buffer.count < maxLineBytes {
                    buffer.append(contentsOf: repeatElement(0, count: min(buffer.count, maxLineBytes - buffer.count)))
                } else {
                    lineNumber += 1
                    respondToOversizedLine()
                    discarding = true
                    end = 0
                    scanned = 0
                }
            }
            guard !stopping.isSet, waitForInput() else { break readLoop }
            let count = buffer.withUnsafeMutableBytes { raw in read(inputFD, raw.baseAddress! + end, raw.count - end) }
            if count < 0 {
                if errno == EINTR { continue }
                break readLoop
            }
            if count == 0 {
                if start < end && !discarding { handle(Array(buffer[start..<end])) }
                break readLoop
            }
            // A client that keeps a window of requests in flight sends the next ones as answers
            // come back: answers written a quarter of the chunk at a time let it do so while the
            // rest is worked on, where one write at the end would leave it idle until then. A
            // long chunk (a file piped in) is still written in a few large writes.
            let lines = buffer.withUnsafeBytes { Self.newlines(in: UnsafeRawBufferPointer(rebasing: $0[end..<(end + count)])) }
            end += count
            writeLines = max(Self.minimumWriteLines, lines / 4)
            output.beginBatch(writingEvery: writeLines)
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
    /// Answers written at once while the current chunk is worked on.
    private nonisolated(unsafe) var writeLines = Int.max  // Only the reading thread touches it.

    /// The fewest answers written at once while a chunk is worked on.
    static let minimumWriteLines = 16

    private static func newlines(in bytes: UnsafeRawBufferPointer) -> Int {
        guard var position = bytes.baseAddress else { return 0 }
        let end = position + bytes.count
        var count = 0
        while position < end, let found = memchr(position, 0x0A, end - position) {
            count += 1
            position = UnsafeRawPointer(found) + 1
        }
        return count
    }

    private func handle(_ line: [UInt8]) {
        lineNumber += 1
        var line = line
        if line.last == 0x0D { line.removeLast() }
        guard line.contains(where: { $0 != 0x20 && $0 != 0x09 }) else { return }
        // Backpressure: past maxInFlight lines, or past the host's byte budget (a line is at
        // least its payload), stop reading until answers come back.
        let size = line.count
        func mustWait() -> Bool {
            let count = pending.load(ordering: .acquiring)
            return !stopping.isSet && (count >= maxInFlight || (count > 0 && pendingBytes.load(ordering: .acquiring) + size > maxPendingBytes))
        }
        if mustWait() {
            output.endBatch()
            done.withLock {
                readerWaiting.store(true, ordering: .sequentiallyConsistent)
                while mustWait() { done.wait() }
                readerWaiting.store(false, ordering: .relaxed)
            }
            output.beginBatch(writingEvery: writeLines)
        }
        pending.add(1, ordering: .relaxed)
        pendingBytes.add(size, ordering: .relaxed)
        host.dispatch(json: line, line: lineNumber) { [self] response in
            output.writeLine(response)
            pendingBytes.subtract(size, ordering: .sequentiallyConsistent)
            let left = pending.subtract(1, ordering: .sequentiallyConsistent).newValue
            if left == 0 || readerWaiting.load(ordering: .sequentiallyConsistent) {
                done.withLock { done.broadcast() }
            }
        }
    }

    private func respondToOversizedLine() {
        let error = CSOPError(
            .invalidPayload, "line \(lineNumber) is longer than \(maxLineBytes) bytes; split the work into smaller requests")
        output.writeLine(Response(id: Request.generateID(), outcome: .failure(error), duration: 0))
    }
}

/// A flag set once, read from any thread.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}
