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

    /// Why bytes a plugin emitted are not an event ("is not valid JSON: …", "is not a JSON
    /// object"), or nil: what the host checks before publishing, in-process or from a child.
    static func problem(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        do throws(JSONParseError) {
            try JSONParser.validate(bytes)
        } catch {
            return "is not valid JSON: \(error)"
        }
        guard bytes.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) == UInt8(ascii: "{") else {
            return "is not a JSON object"
        }
        return nil
    }

    public init(plugin: String, generation: Int = 0, json: RawJSON) {
        self.plugin = plugin
        self.generation = generation
        self.json = json
    }
}
