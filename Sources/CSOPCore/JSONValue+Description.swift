extension JSONValue: CustomStringConvertible {
    /// The value as compact JSON, so `print(value)` shows what goes over the wire.
    public var description: String { String(decoding: serialized(), as: UTF8.self) }
}

extension JSONObject: CustomStringConvertible {
    /// The object as compact JSON.
    public var description: String { JSONValue.object(self).description }
}

extension RawJSON: CustomStringConvertible {
    /// The JSON text.
    public var description: String { string }
}
