import CSOPCore

/// One tracked user as `sync.presence` reports it: `{userId, onlineAt, ...metadata}`.
struct PresenceUser: Sendable, Equatable {
    var userID: String
    /// Milliseconds since the epoch when the user first joined the channel.
    var onlineAt: Int64
    var metadata: JSONObject

    var json: JSONValue {
        var object: JSONObject = ["userId": .string(userID), "onlineAt": .int(onlineAt)]
        for member in metadata.members { object[member.key] = member.value }
        return .object(object)
    }

    /// The data of a `presence.join` event.
    var joinData: [UInt8] { json.serialized() }

    /// The data of a `presence.leave` event; `reason` is `left`, `expired` or `shutdown`.
    static func leaveData(userID: String, reason: String) -> [UInt8] {
        JSONValue.object(["userId": .string(userID), "reason": .string(reason)]).serialized()
    }
}
