/// The NOTIFY payloads of the cluster transport.
///
/// A channel that keeps history sends each message as an M frame
/// `M<origin>\n<channel> <epoch> <offset> <event> <timestamp> <data>`, or, when it is too large
/// for one NOTIFY, as an H frame `H<origin>\n<channel> <epoch> <offset>` that says the
/// channel's history (in PostgreSQL) now reaches `offset`: receivers read it from the table.
/// Other channels send batch frames that carry whole messages: `B<origin>\n<line>\n<line>…`.
/// A message too large for one frame travels as chunk frames
/// `C<origin> <seq> <part> <total>\n<bytes>`, all sent in one transaction so they arrive
/// together and in order. Every frame stays under
/// NOTIFY's 8,000-byte payload limit and is valid UTF-8 (chunks split between scalars).
package enum ClusterFrame {
    /// Bytes per frame, leaving room under PostgreSQL's 8,000-byte limit.
    package static let budget = 7900

    /// The most bytes an origin may have. Instances name themselves with 16 hex digits; a frame
    /// that claims a longer origin is no instance's, and an origin that long would leave a
    /// frame no room for its messages.
    package static let maxOriginBytes = 64

    /// Packs message lines into frames, in order. `origin` has at most ``maxOriginBytes``.
    package static func frames(origin: String, lines: [(sequence: UInt64, bytes: [UInt8])]) -> [String] {
        precondition(origin.utf8.count <= maxOriginBytes, "a cluster origin of \(origin.utf8.count) bytes, more than \(maxOriginBytes)")
        var frames: [String] = []
        let header = Array("B\(origin)\n".utf8)
        var current: [UInt8] = []
        func flush() {
            if !current.isEmpty { frames.append(String(decoding: current, as: UTF8.self)) }
            current = []
        }
        for line in lines {
            if header.count + line.bytes.count > budget {
                flush()
                frames.append(contentsOf: chunks(origin: origin, sequence: line.sequence, bytes: line.bytes))
                continue
            }
            if !current.isEmpty, current.count + 1 + line.bytes.count > budget { flush() }
            if current.isEmpty {
                current = header
            } else {
                current.append(0x0A)
            }
            current.append(contentsOf: line.bytes)
        }
        flush()
        return frames
    }

    private static func chunks(origin: String, sequence: UInt64, bytes: [UInt8]) -> [String] {
        // Room for "C<origin> <seq> <part> <total>\n" with 20-digit numbers.
        let room = budget - origin.utf8.count - 70
        var slices: [ArraySlice<UInt8>] = []
        var start = 0
        while start < bytes.count {
            var end = min(start + room, bytes.count)
            // Never cut a UTF-8 scalar: back up over continuation bytes.
            while end < bytes.count, end > start, bytes[end] & 0xC0 == 0x80 { end -= 1 }
            slices.append(bytes[start..<end])
            start = end
        }
        return slices.enumerated().map { part, slice in
            var frame = Array("C\(origin) \(sequence) \(part) \(slices.count)\n".utf8)
            frame.append(contentsOf: slice)
            return String(decoding: frame, as: UTF8.self)
        }
    }
}

/// Turns the frames one listener receives back into messages, dropping this instance's own
/// echoes and any (origin, sequence) already delivered. Owned by the listen loop.
///
/// Anyone allowed to NOTIFY on the cluster channel can send anything: a payload that is not a
/// well-formed frame, or a message line that is not `<seq> <channel> <event> <timestamp>
/// <data>` with valid names and compact JSON data, is dropped and counted in ``malformed``
/// (``lastProblem`` says why, without repeating the payload). Nothing a payload holds makes
/// `receive` trap.
package struct ClusterReceiver {
    /// Unfinished chunked messages kept at once, one per origin: a real sender's chunks come
    /// in one transaction, so more means someone is sending chunks that never finish.
    package static let maxPartialMessages = 64
    private static let kinds: Set<UInt8> = [UInt8(ascii: "B"), UInt8(ascii: "C"), UInt8(ascii: "H"), UInt8(ascii: "M")]

    let ownOrigin: String
    let maxMessageBytes: Int
    private var lastSequence: [String: UInt64] = [:]
    private var partial: [String: (sequence: UInt64, next: Int, total: Int, bytes: [UInt8])] = [:]
    /// Frames and message lines that could not be read, for diagnostics.
    package private(set) var malformed = 0
    /// Why the last malformed frame or line was dropped, for the log.
    package private(set) var lastProblem: String?

    package init(ownOrigin: String, maxMessageBytes: Int) {
        self.ownOrigin = ownOrigin
        self.maxMessageBytes = maxMessageBytes
    }

    /// What a history frame says: `channel`'s history reaches `top` in `epoch`; an M frame
    /// also carries that message.
    package struct Advance: Sendable {
        package var channel: String
        package var epoch: String
        package var top: Int64
        package var message: SyncMessage?
    }

    /// Reads one frame: whole messages it completes are returned, a history frame from another
    /// instance goes to `advanced`.
    package mutating func receive(_ payload: String, advanced: (Advance) -> Void = { _ in }) -> [SyncMessage] {
        let bytes = Array(payload.utf8)
        guard let kind = bytes.first, Self.kinds.contains(kind) else {
            return drop("a NOTIFY payload that is not a cluster frame (it starts with none of B, C, H and M)")
        }
        // bytes[0] is a kind letter, so the header line, if any, ends at 1 or later.
        guard let newline = bytes.firstIndex(of: 0x0A) else { return drop("a cluster frame without a header line") }
        let header = bytes[1..<newline]
        let body = bytes[(newline + 1)...]
        // A chunk's header also holds its sequence, part and total: three numbers of at most 20 digits.
        guard header.count <= ClusterFrame.maxOriginBytes + (kind == UInt8(ascii: "C") ? 63 : 0) else {
            return drop("a cluster frame whose header is longer than an origin of \(ClusterFrame.maxOriginBytes) bytes allows")
        }
        if kind == UInt8(ascii: "H") || kind == UInt8(ascii: "M") {
            let origin = String(decoding: header, as: UTF8.self)
            if origin == ownOrigin { return [] }
            let withMessage = kind == UInt8(ascii: "M")
            let parts = body.split(separator: 0x20, maxSplits: withMessage ? 5 : 2, omittingEmptySubsequences: false)
            func text(_ index: Int) -> String { String(decoding: parts[index], as: UTF8.self) }
            guard parts.count == (withMessage ? 6 : 3), SyncScope.isValidKeptChannel(text(0)), HistoryPage.isValidEpoch(text(1)),
                let offset = Int64(text(2)), offset > 0
            else {
                return drop("a history frame \(Self.from(origin)) that is not <channel> <epoch> <offset>[ <event> <timestamp> <data>]")
            }
            var advance = Advance(channel: text(0), epoch: text(1), top: offset)
            if withMessage {
                let data = Array(parts[5])
                guard SyncNames.isValidName(text(3)), let timestamp = Int64(text(4)), data.count <= maxMessageBytes,
                    SyncMessage.isCompactJSON(data)
                else {
                    return drop("a history frame \(Self.from(origin)) whose event, timestamp or compact JSON data is malformed")
                }
                advance.message = SyncMessage(
                    channel: advance.channel, event: text(3), data: data, timestamp: timestamp, origin: origin, offset: offset,
                    epoch: advance.epoch)
            }
            advanced(advance)
            return []
        }
        if kind == UInt8(ascii: "B") {
            let origin = String(decoding: header, as: UTF8.self)
            if origin == ownOrigin { return [] }
            var messages: [SyncMessage] = []
            for line in body.split(separator: 0x0A, omittingEmptySubsequences: true) {
                guard let (sequence, message) = SyncMessage.parse(line: line, origin: origin) else {
                    _ = drop("a message line \(Self.from(origin)) that is not <seq> <channel> <event> <timestamp> <compact JSON>")
                    continue
                }
                if accept(origin, sequence) { messages.append(message) }
            }
            return messages
        }
        let parts = header.split(separator: 0x20).map { String(decoding: $0, as: UTF8.self) }
        guard parts.count == 4, let sequence = UInt64(parts[1]), let part = Int(parts[2]), let total = Int(parts[3]),
            total > 0, part >= 0, part < total
        else {
            return drop("a chunk frame whose header is not C<origin> <seq> <part> <total>")
        }
        let origin = parts[0]
        guard origin.utf8.count <= ClusterFrame.maxOriginBytes else {
            return drop("a chunk frame whose origin is longer than \(ClusterFrame.maxOriginBytes) bytes")
        }
        if origin == ownOrigin { return [] }
        if part == 0 {
            if partial[origin] == nil, partial.count >= Self.maxPartialMessages, let evicted = partial.first {
                partial[evicted.key] = nil
                _ = drop("an unfinished chunked message \(Self.from(evicted.key)): more than \(Self.maxPartialMessages) at once")
            }
            partial[origin] = (sequence, 0, total, [])
        }
        guard var state = partial[origin], state.sequence == sequence, state.next == part, state.total == total else {
            partial[origin] = nil
            return drop("chunk \(part) of \(total) \(Self.from(origin)) out of order, or of another message")
        }
        state.bytes.append(contentsOf: body)
        state.next += 1
        if state.bytes.count > maxMessageBytes + 256 {
            partial[origin] = nil
            return drop("a chunked message \(Self.from(origin)) over the \(maxMessageBytes)-byte limit")
        }
        guard state.next == total else {
            partial[origin] = state
            return []
        }
        partial[origin] = nil
        guard let (lineSequence, message) = SyncMessage.parse(line: state.bytes[...], origin: origin), lineSequence == sequence else {
            return drop("a chunked message \(Self.from(origin)) that is not <seq> <channel> <event> <timestamp> <compact JSON>")
        }
        return accept(origin, sequence) ? [message] : []
    }

    private mutating func drop(_ problem: String) -> [SyncMessage] {
        malformed += 1
        lastProblem = problem
        return []
    }

    /// "from <origin>" when the origin looks like an instance id; a payload's text is never
    /// repeated otherwise (it could hold anything, control characters included).
    static func from(_ origin: String) -> String {
        let readable = (1...64).contains(origin.utf8.count) && origin.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: ".")
        }
        return readable ? "from origin \(origin)" : "from an origin that is not a readable instance id"
    }

    private mutating func accept(_ origin: String, _ sequence: UInt64) -> Bool {
        if let last = lastSequence[origin], sequence <= last { return false }
        lastSequence[origin] = sequence
        return true
    }
}
