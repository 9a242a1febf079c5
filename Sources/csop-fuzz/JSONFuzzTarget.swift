import CSOPCore

/// `JSONParser`, `JSONWriter` and `RawJSON` on arbitrary bytes.
///
/// - the parser and `RawJSON(validating:)` accept exactly the same documents;
/// - an error's offset lies inside the input;
/// - parse → `serialized()` → parse gives an equal value (numbers exactly: `-0.0` is not `0.0`,
///   and `.number` keeps its digits), and writing it again gives the same bytes (the compact
///   form is a fixed point), which `RawJSON` also holds and validates;
/// - the text parser (`JSONValue(parsing: String)`) agrees with the byte parser.
enum JSONFuzzTarget {
    static let target = FuzzTarget(
        name: "json", summary: "JSONParser / JSONWriter / RawJSON: parse → write → parse, validation agrees",
        check: check)

    static func check(_ bytes: [UInt8]) {
        let parsed = parse(bytes)
        let validated = validate(bytes)
        switch (parsed, validated) {
        case (.success(let value), .success):
            roundTrip(value, from: bytes)
        case (.failure(let error), .failure(let validationError)):
            property(error.offset >= 0 && error.offset <= bytes.count, "parse error offset \(error.offset) outside \(bytes.count) bytes")
            property(!error.reason.isEmpty, "parse error without a reason")
            property(
                validationError.offset >= 0 && validationError.offset <= bytes.count,
                "validation error offset \(validationError.offset) outside \(bytes.count) bytes")
        case (.success(let value), .failure(let error)):
            property(false, "the parser accepts \(shown(bytes)) as \(value) but RawJSON(validating:) refuses it: \(error)")
        case (.failure(let error), .success):
            property(false, "RawJSON(validating:) accepts \(shown(bytes)) but the parser refuses it: \(error)")
        }
    }

    static func roundTrip(_ value: JSONValue, from bytes: [UInt8]) {
        let written = value.serialized()
        guard case .success(let reparsed) = parse(written) else {
            return property(false, "\(shown(bytes)) was written as \(shown(written)), which does not parse")
        }
        property(reparsed == value, "\(shown(bytes)) was written as \(shown(written)), which parses to a different value")
        let rewritten = reparsed.serialized()
        property(rewritten == written, "writing is not stable: \(shown(written)) then \(shown(rewritten))")
        property(RawJSON(value).bytes == written, "RawJSON(value) differs from serialized()")
        property(validate(written).isSuccess, "RawJSON(validating:) refuses the writer's output \(shown(written))")
        if let raw = try? RawJSON(validating: bytes) {
            property(raw.value == value, "RawJSON(validating:).value differs from the parsed value")
        }
        if let text = String(validating: bytes, as: UTF8.self) {
            let fromText = Result { () throws(JSONParseError) in try JSONValue(parsing: text) }
            property(fromText.value == value, "JSONValue(parsing: String) disagrees with the byte parser")
        } else {
            property(false, "the parser accepted bytes that are not UTF-8: \(shown(bytes))")
        }
    }

    static func parse(_ bytes: [UInt8]) -> Result<JSONValue, JSONParseError> {
        Result { () throws(JSONParseError) in try JSONValue(parsing: bytes) }
    }

    static func validate(_ bytes: [UInt8]) -> Result<Void, JSONParseError> {
        Result { () throws(JSONParseError) in _ = try RawJSON(validating: bytes) }
    }
}

extension Result {
    var isSuccess: Bool { if case .success = self { true } else { false } }
    var value: Success? { if case .success(let value) = self { value } else { nil } }
}
