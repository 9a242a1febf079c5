import CSOPCore

/// Whose keys a call sees: the local owner's (no caller), or one tenant's. The one place
/// storage turns the keys a caller names into the keys it stores, and back.
///
/// The owner's keys are stored as given, so existing databases read exactly as before. A
/// tenant's key `k` is stored as `NUL tenant NUL k`: user keys never contain NUL (refused as
/// input) and tenants never do (``Caller`` forbids control characters), so no owner key
/// starts with NUL and no tenant's range holds another's keys. The stored form never leaves
/// the plugin: replies and error messages name the user's key (``userKey(_:)``).
///
/// The owner's range starts at byte 0x01, so the owner's `list` and `stats` do not include
/// tenants' keys, and each namespace is held to `maxBytes` on its own (see ``LocalStore``).
struct StorageNamespace: Sendable, Hashable {
    /// nil: the local owner.
    let tenant: String?
    /// What every stored key of this namespace starts with (empty for the owner).
    let prefix: [UInt8]

    init(_ caller: Caller?) {
        self.init(tenant: caller?.tenant)
    }

    init(tenant: String?) {
        self.tenant = tenant
        prefix = tenant.map { [0] + Array($0.utf8) + [0] } ?? []
    }

    static let owner = StorageNamespace(tenant: nil)

    /// The key as stored for the user's `key`.
    func storedKey(_ key: String) -> String {
        guard tenant != nil else { return key }
        return String(decoding: prefix + Array(key.utf8), as: UTF8.self)
    }

    /// `item` with its key as stored.
    func stored(_ item: StorageRequest.SaveItem) -> StorageRequest.SaveItem {
        var item = item
        item.key = storedKey(item.key)
        return item
    }

    /// The user's key for a stored key of any namespace.
    static func userKey(_ stored: String) -> String {
        let utf8 = stored.utf8
        guard utf8.first == 0 else { return stored }
        guard let end = utf8.dropFirst().firstIndex(of: 0) else { return stored }
        return String(stored[stored.utf8.index(after: end)...])
    }

    /// The tenant a stored key belongs to; nil for the owner's keys.
    static func tenant(ofStored stored: String) -> String? {
        let prefix = prefix(ofStored: stored)
        guard prefix.count >= 2 else { return nil }
        return String(decoding: prefix.dropFirst().dropLast(), as: UTF8.self)
    }

    /// The namespace a stored key belongs to: its prefix (empty for the owner's keys).
    static func prefix(ofStored stored: String) -> [UInt8] {
        let utf8 = stored.utf8
        guard utf8.first == 0, let end = utf8.dropFirst().firstIndex(of: 0) else { return [] }
        return Array(utf8[...end])
    }

    /// The stored keys of this namespace: `lower ≤ key < upper`, in byte order.
    var range: (lower: [UInt8], upper: [UInt8]) {
        guard tenant != nil else { return ([0x01], [0xFF]) }
        return (prefix, Array(prefix.dropLast()) + [0x01])
    }

    /// The range of stored keys starting with the user's `prefix` in this namespace.
    func range(startingWith userPrefix: String?) -> (lower: [UInt8], upper: [UInt8]) {
        guard let userPrefix, !userPrefix.isEmpty else { return range }
        let lower = prefix + Array(userPrefix.utf8)
        return (lower, LocalStore.prefixUpperBound(lower) ?? [0xFF])
    }
}
