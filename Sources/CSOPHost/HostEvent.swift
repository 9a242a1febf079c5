public import CSOPCore

/// An event a plugin pushed through the host (a sync message, a presence change...).
public struct HostEvent: Sendable {
    /// The domain of the plugin that emitted it.
    public var plugin: String
    /// The event object, as the plugin serialized it.
    public var json: RawJSON

    public var value: JSONValue { json.value }
}
