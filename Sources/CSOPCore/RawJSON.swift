/// Serialized JSON that is known to be valid, kept as bytes so results pass through the
/// host without being parsed and written again.
public struct RawJSON: Sendable, Hashable {
    public let bytes: [UInt8]

    public static let null = RawJSON(unchecked: Array("null".utf8))

    /// Wraps bytes the caller knows to be one valid JSON value.
    public init(unchecked bytes: [UInt8]) { self.bytes = bytes }

    /// Wraps bytes after checking they hold exactly one JSON value.
    public init(validating bytes: [UInt8]) throws(JSONParseError) {
        let result: Result<Void, JSONParseError> = bytes.withUnsafeBufferPointer { buffer in
            do throws(JSONParseError) { try JSONParser.validate(buffer); return .success(()) } catch { return .failure(error) }
        }
        try result.get()
        self.bytes = bytes
    }

    public init(_ value: JSONValue) { self.bytes = value.serialized() }

    /// The parsed value.
    public var value: JSONValue {
        // Validated on construction, so parsing cannot fail.
        (try? JSONParser.parse(bytes)) ?? .null
    }

    public var string: String { String(decoding: bytes, as: UTF8.self) }
}
