import CSOPCore

/// Whose channels a call sees: the local owner's (no caller), or one tenant's. The one place
/// sync turns the channel a caller names into the channel it keeps, and back.
///
/// The owner's channels are kept as named. A tenant's channel `news` is kept as
/// `<tenant as lowercase hex>/news`: `/` is not a channel character, so no owner channel looks
/// like one, and hex keeps any tenant (spaces, any Unicode) within the cluster wire format
/// (`<seq> <channel> <event> …`) and the presence table. Subscriptions, deliveries, presence
/// and the cluster all work on the kept name; events and replies show the user's
/// (``visibleChannel(_:)``).
struct SyncScope: Sendable, Hashable {
    /// nil: the local owner.
    let tenant: String?
    /// What each of its kept channel names starts with (empty for the owner).
    private let prefix: String

    init(_ caller: Caller?) {
        self.init(tenant: caller?.tenant)
    }

    init(tenant: String?) {
        self.tenant = tenant
        prefix = tenant.map { Self.hex($0) + "/" } ?? ""
    }

    static let owner = SyncScope(tenant: nil)

    /// The kept name of the user's `channel`.
    func keptChannel(_ channel: String) -> String { prefix + channel }

    /// Whether a kept channel name belongs to this scope.
    func owns(_ kept: String) -> Bool {
        tenant == nil ? !kept.utf8.contains(UInt8(ascii: "/")) : kept.hasPrefix(prefix)
    }

    /// The user's name of any kept channel.
    static func visibleChannel(_ kept: String) -> String {
        guard let slash = kept.utf8.firstIndex(of: UInt8(ascii: "/")) else { return kept }
        return String(kept[kept.utf8.index(after: slash)...])
    }

    /// Whether `kept` is a well-formed kept channel name: a channel name, optionally after an
    /// even number (2–256) of lowercase hex digits and `/`. What a cluster frame may carry.
    static func isValidKeptChannel(_ kept: String) -> Bool {
        let utf8 = kept.utf8
        guard let slash = utf8.firstIndex(of: UInt8(ascii: "/")) else { return SyncNames.isValidName(kept) }
        let hexPart = utf8[..<slash]
        guard !hexPart.isEmpty, hexPart.count % 2 == 0, hexPart.count <= 2 * Caller.maxNameBytes,
            hexPart.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) })
        else { return false }
        return SyncNames.isValidName(String(kept[kept.utf8.index(after: slash)...]))
    }

    private static func hex(_ text: String) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count * 2)
        for byte in text.utf8 {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
