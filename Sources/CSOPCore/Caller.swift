/// Who a request runs for, when it came through an authenticating front end (the gateway).
///
/// A request without a caller runs for the local owner (`csop run`, embedding): everything is
/// allowed and there is no tenant. A request with one may call only the actions its
/// ``actions`` allow (the router answers `FORBIDDEN` otherwise), and every plugin keeps its
/// data apart per ``tenant``: storage keys, compute's registered functions, sync's channels
/// and presence. A caller never comes from a request's JSON; only the embedding code (the
/// gateway, after checking a token) sets one.
///
/// Subject and tenant are 1–128 bytes of UTF-8 with no control characters (U+0000–U+001F,
/// U+007F–U+009F). The control characters include NUL, which storage uses as its namespace
/// separator (a tenant's keys are stored as `NUL tenant NUL key`; user keys never contain NUL,
/// so no owner key can collide with one and the owner's existing data reads as before). No
/// printable character is reserved: sync hex-encodes the tenant in its internal channel names,
/// and compute keys its registry by (tenant, name). Check a caller with ``validate()`` before
/// dispatching it; the router refuses an invalid one with `UNAUTHENTICATED`.
public struct Caller: Sendable, Hashable {
    /// The token's `sub`.
    public var subject: String
    /// Whose data the request sees; defaults to ``subject``.
    public var tenant: String
    /// What it may call.
    public var actions: ActionPatterns

    /// The longest subject or tenant, in UTF-8 bytes.
    public static let maxNameBytes = 128

    /// - Parameters:
    ///   - subject: the authenticated subject (a token's `sub`).
    ///   - tenant: whose data it sees; nil means the subject's own.
    ///   - actions: the actions it may call.
    public init(subject: String, tenant: String? = nil, actions: ActionPatterns) {
        self.subject = subject
        self.tenant = tenant ?? subject
        self.actions = actions
    }

    /// Whether the caller may run `action` (`"domain.operation"`).
    public func allows(_ action: String) -> Bool { actions.matches(action) }

    /// Checks subject and tenant.
    /// - Throws: `UNAUTHENTICATED` naming the field and the rule it breaks.
    public func validate() throws(CSOPError) {
        try Self.validateName(subject, field: "subject")
        try Self.validateName(tenant, field: "tenant")
    }

    /// Whether `name` may be a subject or tenant: 1–128 bytes, no control characters.
    public static func isValidName(_ name: String) -> Bool {
        let count = name.utf8.count
        guard count > 0, count <= maxNameBytes else { return false }
        return !name.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }
    }

    private static func validateName(_ name: String, field: String) throws(CSOPError) {
        guard !isValidName(name) else { return }
        let count = name.utf8.count
        let rule =
            count == 0
            ? "is empty" : count > maxNameBytes ? "is \(count) bytes; the limit is \(maxNameBytes)" : "contains a control character"
        throw CSOPError(.unauthenticated, "the caller's \(field) \(rule); it must be 1 to \(maxNameBytes) bytes with no control characters")
    }
}

/// Action patterns: "*", "domain.*", or "domain.operation"; validated on construction.
///
/// `"*"` allows every action, `"storage.*"` every operation of a domain, `"storage.get"` one
/// operation. Domains and operations are identifiers (`[A-Za-z_][A-Za-z0-9_]*`, at most 64
/// bytes), as in a request's action. An empty list allows nothing.
public struct ActionPatterns: Sendable, Hashable, CustomStringConvertible {
    /// The patterns, in the order given, without duplicates.
    public private(set) var patterns: [String]

    /// - Throws: `INVALID_PAYLOAD` naming the first pattern that is not `*`, `domain.*` or
    ///   `domain.operation`.
    public init(_ patterns: [String]) throws(CSOPError) {
        var kept: [String] = []
        for pattern in patterns {
            guard Self.isValid(pattern) else {
                throw .invalidPayload(
                    "action pattern \"\(pattern)\" is not valid; use \"*\", \"domain.*\" or \"domain.operation\" (identifiers of at most \(Self.maxPartBytes) bytes)")
            }
            if !kept.contains(pattern) { kept.append(pattern) }
        }
        self.patterns = kept
    }

    /// Parses comma-separated patterns, e.g. `"storage.*,sync.*"`; white space around each is
    /// ignored, and an empty (or all-blank) string is an empty list.
    /// - Throws: `INVALID_PAYLOAD` naming the bad pattern (an empty one between commas included).
    public init(parsing commaSeparated: String) throws(CSOPError) {
        let trimmed = Self.trim(Substring(commaSeparated))
        let parts = trimmed.isEmpty ? [] : trimmed.split(separator: ",", omittingEmptySubsequences: false).map { String(Self.trim($0)) }
        try self.init(parts)
    }

    private init(unchecked patterns: [String]) { self.patterns = patterns }

    /// Every action.
    public static let all = ActionPatterns(unchecked: ["*"])

    /// Whether some pattern allows `action`.
    public func matches(_ action: String) -> Bool {
        for pattern in patterns {
            if pattern == "*" || pattern == action { return true }
            if pattern.hasSuffix(".*") {
                let domain = pattern.utf8.dropLast(2)
                let actionBytes = action.utf8
                if actionBytes.count > domain.count + 1, actionBytes.starts(with: domain),
                    actionBytes[actionBytes.index(actionBytes.startIndex, offsetBy: domain.count)] == UInt8(ascii: ".")
                {
                    return true
                }
            }
        }
        return false
    }

    /// The patterns joined by commas (the form ``init(parsing:)`` reads and the ABI carries).
    public var description: String { patterns.joined(separator: ",") }

    static let maxPartBytes = 64

    private static func isValid(_ pattern: String) -> Bool {
        if pattern == "*" { return true }
        let parts = pattern.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, isIdentifier(parts[0]) else { return false }
        return parts[1] == "*" || isIdentifier(parts[1])
    }

    private static func isIdentifier(_ part: Substring) -> Bool {
        let bytes = part.utf8
        guard let first = bytes.first, bytes.count <= maxPartBytes else { return false }
        func letter(_ b: UInt8) -> Bool { (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F }
        return letter(first) && bytes.dropFirst().allSatisfy { letter($0) || ($0 >= 0x30 && $0 <= 0x39) }
    }

    private static func trim(_ text: Substring) -> Substring {
        var text = text
        while let c = text.first, c == " " || c == "\t" { text.removeFirst() }
        while let c = text.last, c == " " || c == "\t" { text.removeLast() }
        return text
    }
}
