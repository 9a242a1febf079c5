import CSOPCore
import Dispatch
import Glibc
import Logging
import Synchronization

/// One end of the Unix stream socket between the host and an isolated plugin's child: frames
/// of `[u32 length, little-endian][u8 kind][body]`, `length` counting the kind and the body.
///
/// Writes from any thread; frames never interleave. Sends coalesce: while one thread writes,
/// frames sent meanwhile are appended and go out in its next `send`, and frames sent from the
/// reading thread itself (answers produced while handling what was read) wait until that
/// thread has handled every frame it already holds, then go out together just before it
/// blocks to read again. Under load that is one system call for many frames; alone, a frame
/// goes out at once. Reads from one thread (``readFrames(_:)`` or a ``FrameReader``). Owns the
/// descriptor and closes it when it goes.
final class IsolationChannel: Sendable {
    /// What a frame carries. Bodies: see ``IsolatedPlugin`` (host side) and
    /// ``IsolatedPluginHost`` (child side).
    enum Kind: UInt8 {
        /// host → child: JSON `{file, searchPath, searchExecutableDirectory, allowInsecurePermissions, logLevel}`.
        case start = 1
        /// child → host: JSON `{name, version, operations, library}`.
        case ready = 2
        /// child → host: JSON `{kind, message, domain?}` (the load failed).
        case failed = 3
        /// host → child: u64 call id, u32 operation, f64 timeout ms, u32 context length, context JSON
        /// (`{subject, tenant, actions}` of the caller, `{traceparent, tracestate}` and `traced: true`
        /// when the host records the plugin's spans, each when set), payload.
        case call = 4
        /// host → child: u64 call id.
        case cancel = 5
        /// child → host: u64 call id, u8 1 + result JSON, or u8 0 + error JSON `{code, message, retry}`.
        case done = 6
        /// child → host: an event's JSON.
        case event = 7
        /// child → host: u8 level, message.
        case log = 8
        /// child → host: u64 call id (the plugin called begin_commit; the child waits for the answer).
        case commit = 9
        /// host → child: u64 call id, u8 1 (go on) or 0 (answered already).
        case commitAnswer = 10
        /// host → child: u64 request id (a scrape asks for the plugin's metrics).
        case metrics = 11
        /// child → host: u64 request id, the plugin's metrics text (already filtered in the child).
        case metricsText = 12
        /// child → host: u64 call id, u8 level, message (the plugin's `csop_call.log`).
        case callLog = 13
        /// child → host: u64 call id, the span's JSON (the plugin's `csop_call.record_span`).
        case callSpan = 14
    }

    /// Log levels as `log` and `callLog` frames number them (the index).
    static let logLevels: [Logger.Level] = [.trace, .debug, .info, .notice, .warning, .error, .critical]

    /// A log level as a frame byte.
    static func logByte(_ level: Logger.Level) -> UInt8 { UInt8(logLevels.firstIndex(of: level) ?? 4) }

    /// A frame byte as a log level (an unknown one is the most severe).
    static func logLevel(_ byte: UInt8) -> Logger.Level { logLevels[min(Int(byte), logLevels.count - 1)] }

    /// Frames larger than this end the connection: 1 GiB, past any payload the host admits.
    static let maxFrame = 1 << 30

    let descriptor: Int32
    private struct Outbox {
        var bytes: [UInt8] = []
        var writing = false
        var failed = false
    }
    private let outbox = Mutex(Outbox())
    private let closed = Atomic<Bool>(false)
    /// The reading thread (`pthread_t`), 0 before one starts.
    private let reader = Atomic<UInt>(0)

    init(descriptor: Int32) { self.descriptor = descriptor }

    deinit { close(descriptor) }

    /// Sends one frame (from the reading thread: queues it until ``flush()``).
    /// - Returns: false when the peer is known to be gone.
    @discardableResult
    func send(_ kind: Kind, _ body: [UInt8]) -> Bool {
        var frame = [UInt8]()
        frame.reserveCapacity(5 + body.count)
        Self.appendU32(&frame, UInt32(body.count + 1))
        frame.append(kind.rawValue)
        frame += body
        if reader.load(ordering: .relaxed) == UInt(bitPattern: Int(bitPattern: pthread_self())) {
            return outbox.withLock { outbox in
                outbox.bytes += frame
                return !outbox.failed
            }
        }
        return write(frame)
    }

    /// Writes what is queued.
    @discardableResult
    func flush() -> Bool { write([]) }

    /// Appends `frame` and, unless another thread is writing (it will take the frame along),
    /// writes everything queued until nothing is left.
    private func write(_ frame: [UInt8]) -> Bool {
        var chunk: [UInt8]? = outbox.withLock { outbox in
            outbox.bytes += frame
            guard !outbox.writing, !outbox.bytes.isEmpty, !outbox.failed else { return nil }
            outbox.writing = true
            defer { outbox.bytes = [] }
            return outbox.bytes
        }
        while let bytes = chunk {
            let ok = bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.send(descriptor, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                    if n < 0, errno == EINTR { continue }
                    guard n > 0 else { return false }
                    offset += n
                }
                return true
            }
            chunk = outbox.withLock { outbox in
                if !ok { outbox.failed = true }
                guard ok, !outbox.bytes.isEmpty else {
                    outbox.writing = false
                    outbox.bytes = []
                    return nil
                }
                defer { outbox.bytes = [] }
                return outbox.bytes
            }
        }
        return outbox.withLock { !$0.failed }
    }

    /// A reader for this channel on the calling thread: frames it sends are queued and
    /// flushed each time the reader is about to wait.
    func makeReader() -> FrameReader {
        reader.store(UInt(bitPattern: Int(bitPattern: pthread_self())), ordering: .relaxed)
        return FrameReader(descriptor: descriptor) { [weak self] in self?.flush() }
    }

    /// Stops both directions: the reader sees the end, the peer sees EOF.
    func shutdownBoth() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(descriptor, Int32(SHUT_RDWR))
    }

    /// Reads frames and hands each to `handle` until the peer closes, an error, or a frame
    /// over ``maxFrame``. Blocks: run it on a thread of its own.
    func readFrames(_ handle: (Kind?, ArraySlice<UInt8>) -> Void) {
        let reader = makeReader()
        while let (kind, body) = reader.next() { handle(kind, body[...]) }
    }

    /// Reads one frame at a time from a descriptor, buffering what came after it. Used by one
    /// thread at a time.
    final class FrameReader {
        private let descriptor: Int32
        private var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        private var start = 0
        private var end = 0
        private let willWait: () -> Void

        init(descriptor: Int32, willWait: @escaping () -> Void = {}) {
            self.descriptor = descriptor
            self.willWait = willWait
        }

        /// How long a reader polls before it blocks: an answer that comes within this finds the
        /// thread awake, sparing the scheduler's wake-up (several µs, the larger part of a
        /// round trip on a loaded machine). Idle, it costs this much CPU once per burst.
        static let spinNanoseconds: UInt64 = 50_000

        /// `recv` into the free part of the buffer: without blocking for up to
        /// ``spinNanoseconds``, then blocking.
        private func spinThenReceive() -> Int {
            let deadline = DispatchTime.now().uptimeNanoseconds + Self.spinNanoseconds
            while true {
                let n = buffer.withUnsafeMutableBytes { raw in recv(descriptor, raw.baseAddress! + end, raw.count - end, Int32(MSG_DONTWAIT)) }
                if n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { return n }
                if DispatchTime.now().uptimeNanoseconds >= deadline { break }
            }
            return buffer.withUnsafeMutableBytes { raw in recv(descriptor, raw.baseAddress! + end, raw.count - end, 0) }
        }

        /// The next frame, or nil at the end (the peer closed, an error, a frame too large).
        func next() -> (Kind?, [UInt8])? {
            while true {
                if end - start >= 4 {
                    let length = Int(IsolationChannel.readU32(buffer, at: start))
                    guard length >= 1, length <= IsolationChannel.maxFrame else { return nil }
                    if end - start - 4 >= length {
                        let frame = (Kind(rawValue: buffer[start + 4]), Array(buffer[(start + 5)..<(start + 4 + length)]))
                        start += 4 + length
                        if start == end {
                            start = 0
                            end = 0
                        }
                        return frame
                    }
                    // Make room for the rest of this frame.
                    if start > 0 {
                        buffer.withUnsafeMutableBytes { raw in
                            raw.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: end - start)
                        }
                        end -= start
                        start = 0
                    }
                    if buffer.count < 4 + length { buffer += [UInt8](repeating: 0, count: 4 + length - buffer.count) }
                }
                // Nothing whole is left to handle: what handling it queued goes out before we wait.
                willWait()
                let n = spinThenReceive()
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { return nil }
                end += n
            }
        }
    }

    // MARK: - Encoding

    static func appendU32(_ bytes: inout [UInt8], _ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }

    static func appendU64(_ bytes: inout [UInt8], _ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }

    static func appendDouble(_ bytes: inout [UInt8], _ value: Double) { appendU64(&bytes, value.bitPattern) }

    static func readU32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    }

    /// Reads fixed-size fields from the front of a frame body.
    struct Reader {
        var body: ArraySlice<UInt8>

        mutating func u8() -> UInt8? {
            guard let first = body.first else { return nil }
            body = body.dropFirst()
            return first
        }

        mutating func u32() -> UInt32? {
            guard body.count >= 4 else { return nil }
            let value = body.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
            body = body.dropFirst(4)
            return value
        }

        mutating func u64() -> UInt64? {
            guard body.count >= 8 else { return nil }
            let value = body.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            body = body.dropFirst(8)
            return value
        }

        mutating func double() -> Double? { u64().map(Double.init(bitPattern:)) }

        mutating func bytes(_ count: Int) -> ArraySlice<UInt8>? {
            guard body.count >= count else { return nil }
            defer { body = body.dropFirst(count) }
            return body.prefix(count)
        }
    }
}
