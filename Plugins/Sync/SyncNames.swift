import CSOPCore

/// The naming and size rules shared by every sync operation.
package enum SyncNames {
    /// Channel and event names: 1–128 bytes of `[A-Za-z0-9_.:-]`.
    static let maxNameBytes = 128
    /// User ids: 1–128 bytes, no control characters.
    static let maxUserIDBytes = 128
    /// Serialized presence metadata.
    static let maxMetadataBytes = 4096
    static let defaultChannel = "default"
    /// Event names starting with one of these are sent by the plugin itself (presence, and
    /// ``recoveryEvent``); a broadcast may not use them.
    static let reservedEventPrefixes = ["presence.", "sync."]
    /// Tells a subscription that messages were lost for good (history trimmed, expired or
    /// reset): `{recovered: false, epoch, offset}`. Reload the state, then go on.
    static let recoveryEvent = "sync.recovery"

    package static func isValidName(_ name: String) -> Bool {
        let utf8 = name.utf8
        guard !utf8.isEmpty, utf8.count <= maxNameBytes else { return false }
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: ":"), UInt8(ascii: "-"):
                continue
            default:
                return false
            }
        }
        return true
    }

    /// Whether `name` is a channel name as the plugin keeps it: a channel name, or a tenant's
    /// (``SyncScope``). What a cluster frame may carry.
    package static func isValidKeptChannel(_ name: String) -> Bool { SyncScope.isValidKeptChannel(name) }

    /// Reads a channel name (default `"default"`).
    /// - Throws: `CHANNEL_ERROR` for a non-string, empty, over-long or badly spelled name.
    static func channel(_ fields: Fields, required: Bool = false) throws(CSOPError) -> String {
        guard let value = fields["channel"], !value.isNull else {
            if required { throw CSOPError(.channelError, "\(fields.path).channel is required") }
            return defaultChannel
        }
        guard case .string(let name) = value else {
            throw CSOPError(.channelError, "\(fields.path).channel must be a string, got \(value.typeName)")
        }
        try check(name, field: "\(fields.path).channel", code: .channelError)
        return name
    }

    /// Checks an event name.
    /// - Throws: `INVALID_PAYLOAD` naming `field`.
    static func event(_ name: String, field: String) throws(CSOPError) {
        try check(name, field: field, code: .invalidPayload)
    }

    static func check(_ name: String, field: String, code: ErrorCode) throws(CSOPError) {
        let count = name.utf8.count
        if count == 0 { throw CSOPError(code, "\(field) must not be empty") }
        if count > maxNameBytes {
            throw CSOPError(code, "\(field) is \(count) bytes; the limit is \(maxNameBytes)")
        }
        if !isValidName(name) {
            throw CSOPError(code, "\(field) may contain only letters, digits and _ . : -")
        }
    }

    /// Checks a presence user id.
    static func userID(_ id: String, field: String) throws(CSOPError) {
        let count = id.utf8.count
        if count == 0 { throw .invalidPayload("\(field) must not be empty") }
        if count > maxUserIDBytes { throw .invalidPayload("\(field) is \(count) bytes; the limit is \(maxUserIDBytes)") }
        if id.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            throw .invalidPayload("\(field) must not contain control characters")
        }
    }
}
