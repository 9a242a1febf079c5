import CSOPCore
import SyncPlugin

/// The cluster transport's NOTIFY frames: `ClusterReceiver.receive` on a sequence of arbitrary
/// payloads (separated by NUL bytes in the input, which a NOTIFY payload cannot contain), and
/// `ClusterFrame.frames` on what came out.
///
/// - garbage is an error value: a payload that is not a batch (`B`), chunk (`C`) or history
///   (`H`, `M`) frame, or has no header line, yields no message and counts as malformed;
/// - a history frame passes on a valid channel, a positive offset and (M) a valid event and
///   compact JSON data, never a batch message;
/// - every message delivered has valid channel and event names, valid JSON data, and is not
///   the receiver's own echo; its data is compact (no white space outside strings, so the
///   event stays one line);
/// - decode → encode → decode: each origin's messages, packed again by `ClusterFrame.frames`
///   (frames under 8,000 bytes), come out of a fresh receiver the same and in order; so does
///   a message made larger than one frame (chunked on scalar boundaries), for an origin an
///   instance can have (no spaces, not empty).
enum ClusterFrameFuzzTarget {
    static let target = FuzzTarget(
        name: "cluster", summary: "ClusterReceiver / ClusterFrame: decode → encode → decode same, garbage is malformed",
        check: check, seeds: seeds)

    static let ownOrigin = "self"
    static let maxMessageBytes = 1 << 20

    static func check(_ bytes: [UInt8]) {
        let payloads = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        var receiver = ClusterReceiver(ownOrigin: ownOrigin, maxMessageBytes: maxMessageBytes)
        var delivered: [SyncMessage] = []
        for payload in payloads {
            let before = receiver.malformed
            var advances: [ClusterReceiver.Advance] = []
            let messages = receiver.receive(payload) { advances.append($0) }
            let utf8 = Array(payload.utf8)
            if !Array("BCHM".utf8).contains(utf8.first ?? 0) || !utf8.contains(0x0A) {
                property(messages.isEmpty && receiver.malformed == before + 1, "garbage \(shown(utf8)) was not refused as malformed")
            }
            // History frames (H, M) are passed on, never delivered as batch messages.
            if utf8.first == UInt8(ascii: "H") || utf8.first == UInt8(ascii: "M") {
                property(messages.isEmpty, "a history frame delivered a batch message")
            }
            for advance in advances {
                property(SyncNames.isValidKeptChannel(advance.channel), "passed on an invalid channel name \(shown(advance.channel))")
                property(advance.top > 0, "passed on offset \(advance.top)")
                if let message = advance.message {
                    property(message.origin != ownOrigin, "the receiver passed on its own history frame")
                    property(message.offset == advance.top && message.epoch == advance.epoch, "a history message's offset or epoch changed")
                    property(SyncNames.isValidName(message.event), "passed on an invalid event name \(shown(message.event))")
                    property(
                        message.data.withUnsafeBufferPointer(JSONParser.isCompact) && JSONFuzzTarget.validate(message.data).isSuccess,
                        "passed on data that is not compact JSON: \(shown(message.data))")
                }
            }
            property(receiver.malformed >= before, "the malformed count went down")
            for message in messages {
                property(message.origin != ownOrigin, "the receiver delivered its own echo")
                property(SyncNames.isValidKeptChannel(message.channel), "delivered an invalid channel name \(shown(message.channel))")
                property(SyncNames.isValidName(message.event), "delivered an invalid event name \(shown(message.event))")
                property(JSONFuzzTarget.validate(message.data).isSuccess, "delivered data that is not JSON: \(shown(message.data))")
                property(
                    message.data.withUnsafeBufferPointer(JSONParser.isCompact), "delivered data that is not compact JSON: \(shown(message.data))")
            }
            delivered += messages
        }
        var origins: [String] = []
        for message in delivered where !origins.contains(message.origin) { origins.append(message.origin) }
        for origin in origins { roundTrip(delivered.filter { $0.origin == origin }, origin: origin) }
        // One per input: it is a dozen kilobytes to pack and read back.
        if let message = delivered.first(where: { !$0.origin.isEmpty && !$0.origin.utf8.contains(0x20) }) {
            roundTrip([enlarged(message)], origin: message.origin)
        }
    }

    /// Packs `messages` as `origin` would send them and reads them back with a fresh receiver.
    static func roundTrip(_ messages: [SyncMessage], origin: String) {
        let lines = messages.enumerated().map { (sequence: UInt64($0.offset + 1), bytes: $0.element.line(sequence: UInt64($0.offset + 1))) }
        let frames = ClusterFrame.frames(origin: origin, lines: lines)
        for frame in frames {
            property(frame.utf8.count < 8000, "a frame of \(frame.utf8.count) bytes, over NOTIFY's 8,000-byte limit")
        }
        var receiver = ClusterReceiver(ownOrigin: ownOrigin, maxMessageBytes: maxMessageBytes)
        let received = frames.flatMap { receiver.receive($0) }
        property(receiver.malformed == 0, "the encoder wrote \(receiver.malformed) frame(s) its receiver calls malformed")
        property(
            received.count == messages.count,
            "\(messages.count) message(s) of origin \(shown(origin)) packed in \(frames.count) frame(s) came back as \(received.count)")
        for (sent, got) in zip(messages, received) {
            property(got.origin == sent.origin, "origin changed: \(shown(sent.origin)) → \(shown(got.origin))")
            property(got.channel == sent.channel && got.event == sent.event, "channel or event changed")
            property(got.timestamp == sent.timestamp, "timestamp changed: \(sent.timestamp) → \(got.timestamp)")
            property(got.data == sent.data, "data changed: \(shown(sent.data)) → \(shown(got.data))")
        }
    }

    /// Frames written by `ClusterFrame.frames`, one input per scenario (payloads joined by NUL).
    static func seeds() -> [(name: String, bytes: [UInt8])] {
        func message(_ event: String, _ data: JSONValue, origin: String = "a1b2c3") -> SyncMessage {
            SyncMessage(channel: "news", event: event, data: data.serialized(), timestamp: 1_700_000_000_000, origin: origin)
        }
        func frames(_ messages: [SyncMessage], origin: String = "a1b2c3", from first: UInt64 = 1) -> [String] {
            let lines = messages.enumerated().map { (sequence: first + UInt64($0.offset), bytes: $0.element.line(sequence: first + UInt64($0.offset))) }
            return ClusterFrame.frames(origin: origin, lines: lines)
        }
        func input(_ payloads: [String]) -> [UInt8] { Array(payloads.joined(separator: "\u{0}").utf8) }
        let small = [message("hello", ["text": "hi"]), message("n", 42), message("presence.join", ["user": "é😀", "meta": [1, 2.5, nil]])]
        let large = message("big", .string(String(repeating: "aé😀\"\\", count: 750)))
        return [
            ("batch", input(frames(small))),
            ("batch-twice", input(frames(small) + frames(small))),
            ("two-origins", input(frames(small) + frames([message("x", [:], origin: "ffee")], origin: "ffee"))),
            ("own-echo", input(frames(small, origin: ClusterFrameFuzzTarget.ownOrigin))),
            ("chunked", input(frames([small[0], large, small[1]]))),
            ("chunked-out-of-order", input(frames([large]).reversed())),
            ("chunked-interleaved", input(frames([large]) + frames([large], origin: "b2", from: 9))),
            ("sequence-restart", input(frames([small[0]], from: 5) + frames([small[1]], from: 2))),
            ("garbage", input(["", "X", "Bo\n1 ch ev 5 {bad", "Bo\nnot a line", "Co 1 5 2\nabc", "Bo\n1 b@d ev 5 1", "Q\n"])),
            ("history", input(["Mo1\nnews 0a1b 7 hello 5 {\"a\":\"b c\"}", "Ho1\nnews 0a1b 8", "Mself\nnews 0a1b 9 e 5 1", "Mo1\nnews 0a1b 0 e 5 1"])),
        ]
    }

    /// The message with its data repeated in an array until it needs chunk frames.
    static func enlarged(_ message: SyncMessage) -> SyncMessage {
        let copies = 3 * ClusterFrame.budget / 2 / (message.data.count + 1) + 1
        let data = [UInt8(ascii: "[")] + Array(repeating: message.data, count: copies).joined(separator: [UInt8(ascii: ",")]) + [UInt8(ascii: "]")]
        var large = message
        large.data = data
        return large
    }
}
