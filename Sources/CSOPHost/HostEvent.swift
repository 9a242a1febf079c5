public import CSOPCore

/// An event a plugin pushed through the host (a sync message, a presence change...).
public struct HostEvent: Sendable {
    /// The domain of the plugin that emitted it.
    public var plugin: String
    /// Which instance of that plugin emitted it (``LoadedPluginInfo/generation``; 0 for the
    /// host's own events and events emitted while the plugin was being created).
    public var generation: Int = 0
    /// The event object, as the plugin serialized it.
    public var json: RawJSON

    public var value: JSONValue { json.value }

    public init(plugin: String, generation: Int = 0, json: RawJSON) {
        self.plugin = plugin
        self.generation = generation
        self.json = json
    }
}
