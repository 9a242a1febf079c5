import CSOPCore

/// Part of one channel's history: the stream's `epoch` and last `top` offset, and retained
/// messages in offset order.
struct HistoryPage: Sendable {
    var epoch: String
    /// The channel's last offset (0 before its first message).
    var top: Int64
    var messages: [SyncMessage]

    /// An epoch as the plugin makes them: 1–64 lowercase hex digits. What a frame or a
    /// `since` may carry.
    static func isValidEpoch(_ epoch: String) -> Bool {
        let utf8 = epoch.utf8
        return (1...64).contains(utf8.count) && utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    /// Whether the messages continue `offset` without a gap up to `end`: the first is
    /// `offset + 1` and the last `end` (or there are none and `offset` is `end`), none missing.
    func follows(_ offset: Int64, upTo end: Int64) -> Bool {
        guard let first = messages.first?.offset, let last = messages.last?.offset else { return offset == end }
        return first == offset + 1 && last == end && last - first + 1 == Int64(messages.count)
    }

    /// A message as `sync.history` lists it.
    static func json(_ message: SyncMessage) -> JSONValue {
        var object: JSONObject = [
            "event": .string(message.event), "timestamp": .int(message.timestamp), "origin": .string(message.origin),
        ]
        object["data"] = (try? JSONValue(parsing: message.data)) ?? .null
        if let offset = message.offset { object["offset"] = .int(offset) }
        return .object(object)
    }
}

/// Where a subscriber left off: `sync.subscribe`'s and `sync.history`'s `since`.
struct HistoryPosition: Sendable, Equatable {
    var offset: Int64
    var epoch: String

    /// Reads `payload.since`, nil when absent.
    /// - Throws: `INVALID_PAYLOAD` naming the bad field.
    static func read(_ fields: Fields) throws(CSOPError) -> HistoryPosition? {
        guard fields.has("since") else { return nil }
        let since = try fields.nested("since", allowed: ["offset", "epoch"])
        let offset = try since.requiredInt("offset")
        if offset < 0 { throw .invalidPayload("payload.since.offset must be 0 or more: the offset of the last event received") }
        let epoch = try since.requiredString("epoch", nonEmpty: false, maxLength: 64)
        if !epoch.isEmpty, !HistoryPage.isValidEpoch(epoch) {
            throw .invalidPayload("payload.since.epoch must be the epoch an event or sync.subscribe gave (lowercase hex), or \"\"")
        }
        return HistoryPosition(offset: offset, epoch: epoch)
    }

    /// Whether this position is in the stream `epoch` (epoch "" with offset 0: the start of any).
    func isIn(_ epoch: String) -> Bool { self.epoch == epoch || (self.epoch.isEmpty && offset == 0) }

    /// Whether `page` (read after this position) continues it without a gap up to `end`, in
    /// this position's stream.
    func isContinued(by page: HistoryPage, upTo end: Int64) -> Bool {
        isIn(page.epoch) && offset <= end && page.follows(offset, upTo: end)
    }
}
