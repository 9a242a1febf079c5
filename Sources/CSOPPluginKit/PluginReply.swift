public import CSOPCore

/// A successful result: a value, or JSON the plugin has already serialized (the fast path:
/// no second encoding).
public enum PluginReply: Sendable {
    case value(JSONValue)
    case raw([UInt8])
}
