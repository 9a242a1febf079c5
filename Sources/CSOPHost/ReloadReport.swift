import CSOPCore

/// What one reload did: an item per entry it loaded, replaced, removed or failed to load.
public struct ReloadReport: Sendable {
    public enum Change: String, Sendable {
        case loaded, replaced, removed, failed
    }

    public struct Item: Sendable {
        public var change: Change
        /// The domain, when known.
        public var plugin: String?
        /// The plugins.d entry.
        public var file: String
        public var version: String?
        public var generation: Int?
        public var library: String?
        /// Why it failed: the ``PluginLoadFailure/Kind`` code.
        public var code: String?
        /// Why it failed (and, for a changed entry, which generation keeps serving).
        public var message: String?

        init(
            change: Change, plugin: String?, file: String, version: String? = nil, generation: Int? = nil,
            library: String? = nil, code: String? = nil, message: String? = nil
        ) {
            self.code = code
            self.change = change
            self.plugin = plugin
            self.file = file
            self.version = version
            self.generation = generation
            self.library = library
            self.message = message
        }

        /// The `host.plugin` event: `{type, change, plugin?, file, version?, generation?, code?, message?}`.
        var json: JSONValue {
            var object: JSONObject = ["type": "host.plugin", "change": .string(change.rawValue)]
            if let plugin { object["plugin"] = .string(plugin) }
            object["file"] = .string(file)
            if let version { object["version"] = .string(version) }
            if let generation { object["generation"] = .int(Int64(generation)) }
            if let code { object["code"] = .string(code) }
            if let message { object["message"] = .string(message) }
            return .object(object)
        }
    }

    public var items: [Item]
    /// Entries left as they were.
    public var unchanged: Int
    /// Why nothing was looked at (the host is shutting down); nil when the reload ran.
    public var refused: String?

    init(items: [Item], unchanged: Int, refused: String? = nil) {
        self.items = items
        self.unchanged = unchanged
        self.refused = refused
    }

    /// What `host.reload` answers: `{changes: [event objects], unchanged, failed}`.
    public var json: JSONValue {
        [
            "changes": .array(items.map(\.json)), "unchanged": .int(Int64(unchanged)),
            "failed": .int(Int64(items.filter { $0.change == .failed }.count)),
        ]
    }
}
