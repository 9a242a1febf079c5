import CSOPCore

/// Which channels keep history, and how much: `[config.history]`.
///
/// ```toml
/// [config.history]
/// size = 1000        # messages kept per channel; 0 keeps none
/// age = 300000       # ms a message is kept
/// [[config.history.channels]]
/// prefix = "chat."   # channels whose name (as the caller sees it) starts with this
/// size = 10000
/// age = 3600000
/// ```
///
/// The longest matching `prefix` wins; other channels get `size` and `age`. Without the
/// section, cluster mode keeps 1000 messages for 5 minutes on every channel and local mode
/// keeps none.
struct HistoryPolicy: Sendable, Equatable {
    struct Limits: Sendable, Equatable {
        /// Messages kept per channel.
        var size: Int64
        /// Milliseconds a message is kept.
        var age: Int64
    }

    struct Rule: Sendable, Equatable {
        var prefix: String
        var limits: Limits
    }

    static let clusterDefault = Limits(size: 1000, age: 300_000)
    static let maxSize: Int64 = 1_000_000
    static let maxAge: Int64 = 30 * 24 * 3_600_000
    static let maxRules = 256

    /// For channels no rule names; size 0 keeps nothing.
    var limits: Limits
    /// Longest prefix first.
    var rules: [Rule]

    static let off = HistoryPolicy(limits: Limits(size: 0, age: 0), rules: [])

    init(limits: Limits, rules: [Rule]) {
        self.limits = limits
        self.rules = rules.sorted { $0.prefix.utf8.count > $1.prefix.utf8.count }
    }

    /// - Throws: `INVALID_PAYLOAD` naming the bad `config.history` key.
    init(_ value: JSONValue?, cluster: Bool) throws(CSOPError) {
        let defaults = cluster ? Self.clusterDefault : Limits(size: 0, age: Self.clusterDefault.age)
        guard let value, !value.isNull else {
            self.init(limits: defaults, rules: [])
            return
        }
        let fields = try Fields(value, path: "config.history", allowed: ["size", "age", "channels"])
        let limits = try Self.limits(fields, defaults: defaults)
        var rules: [Rule] = []
        for (index, entry) in (try fields.array("channels", maxCount: Self.maxRules) ?? []).enumerated() {
            let path = "config.history.channels[\(index)]"
            let rule = try Fields(entry, path: path, allowed: ["prefix", "size", "age"])
            let prefix = try rule.requiredString("prefix", nonEmpty: false, maxLength: SyncNames.maxNameBytes)
            if rules.contains(where: { $0.prefix == prefix }) {
                throw .invalidPayload("\(path).prefix \"\(prefix)\" is given twice; each prefix may have one rule")
            }
            rules.append(Rule(prefix: prefix, limits: try Self.limits(rule, defaults: limits)))
        }
        self.init(limits: limits, rules: rules)
    }

    private static func limits(_ fields: Fields, defaults: Limits) throws(CSOPError) -> Limits {
        Limits(
            size: try fields.int("size", in: 0...maxSize) ?? defaults.size,
            age: try fields.int("age", in: 1...maxAge) ?? defaults.age)
    }

    /// The limits of a kept channel, nil when it keeps no history.
    func limits(forKept kept: String) -> Limits? {
        let visible = SyncScope.visibleChannel(kept)
        let limits = rules.first { visible.hasPrefix($0.prefix) }?.limits ?? self.limits
        return limits.size > 0 ? limits : nil
    }

    /// Whether any channel keeps history.
    var isOn: Bool { limits.size > 0 || rules.contains { $0.limits.size > 0 } }
}
