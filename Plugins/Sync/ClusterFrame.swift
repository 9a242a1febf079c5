/// The NOTIFY payloads of the cluster transport.
///
/// A batch frame carries whole messages: `B<origin>\n<line>\n<line>…`. A message too large
/// for one frame travels as chunk frames `C<origin> <seq> <part> <total>\n<bytes>`, all sent
/// in one transaction so they arrive together and in order. Every frame stays under
/// NOTIFY's 8,000-byte payload limit and is valid UTF-8 (chunks split between scalars).
package enum ClusterFrame {
    /// Bytes per frame, leaving room under PostgreSQL's 8,000-byte limit.
    package static let budget = 7900

    /// Packs message lines into frames, in order.
    package static func frames(origin: String, lines: [(sequence: UInt64, bytes: [UInt8])]) -> [String] {
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
package struct ClusterReceiver {
    let ownOrigin: String
    let maxMessageBytes: Int
    private var lastSequence: [String: UInt64] = [:]
    private var partial: [String: (sequence: UInt64, next: Int, total: Int, bytes: [UInt8])] = [:]
    /// Frames that could not be read, for diagnostics.
    package private(set) var malformed = 0

    package init(ownOrigin: String, maxMessageBytes: Int) {
        self.ownOrigin = ownOrigin
        self.maxMessageBytes = maxMessageBytes
    }

    package mutating func receive(_ payload: String) -> [SyncMessage] {
        let bytes = Array(payload.utf8)
        guard let kind = bytes.first, let newline = bytes.firstIndex(of: 0x0A) else {
            malformed += 1
            return []
        }
        let header = bytes[1..<newline]
        let body = bytes[(newline + 1)...]
        switch kind {
        case UInt8(ascii: "B"):
            let origin = String(decoding: header, as: UTF8.self)
            if origin == ownOrigin { return [] }
            var messages: [SyncMessage] = []
            for line in body.split(separator: 0x0A, omittingEmptySubsequences: true) {
                guard let (sequence, message) = SyncMessage.parse(line: line, origin: origin) else {
                    malformed += 1
                    continue
                }
                if accept(origin, sequence) { messages.append(message) }
            }
            return messages
        case UInt8(ascii: "C"):
            let parts = header.split(separator: 0x20).map { String(decoding: $0, as: UTF8.self) }
            guard parts.count == 4, let sequence = UInt64(parts[1]), let part = Int(parts[2]), let total = Int(parts[3]),
                total > 0, part < total
            else {
                malformed += 1
                return []
            }
            let origin = parts[0]
            if origin == ownOrigin { return [] }
            if part == 0 {
                partial[origin] = (sequence, 0, total, [])
            }
            guard var state = partial[origin], state.sequence == sequence, state.next == part, state.total == total else {
                partial[origin] = nil
                malformed += 1
                return []
            }
            state.bytes.append(contentsOf: body)
            state.next += 1
            if state.bytes.count > maxMessageBytes + 256 {
                partial[origin] = nil
                malformed += 1
                return []
            }
            guard state.next == total else {
                partial[origin] = state
                return []
            }
            partial[origin] = nil
            guard let (lineSequence, message) = SyncMessage.parse(line: state.bytes[...], origin: origin),
                lineSequence == sequence
            else {
                malformed += 1
                return []
            }
            return accept(origin, sequence) ? [message] : []
        default:
            malformed += 1
            return []
        }
    }

    private mutating func accept(_ origin: String, _ sequence: UInt64) -> Bool {
        if let last = lastSequence[origin], sequence <= last { return false }
        lastSequence[origin] = sequence
        return true
    }
}
