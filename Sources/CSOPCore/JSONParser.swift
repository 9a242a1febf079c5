/// Why a byte sequence is not valid JSON, with where it went wrong.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    /// Zero-based byte offset of the problem.
    public var offset: Int

    public var description: String { "\(reason) at byte \(offset + 1)" }
}

/// A strict RFC 8259 parser working directly on UTF-8 bytes.
///
/// Nesting deeper than ``maxDepth`` is rejected instead of overflowing the stack.
public struct JSONParser: ~Copyable {
    public static let maxDepth = 512

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0
    private var depth = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// Parses one complete JSON document; trailing bytes other than white space are an error.
    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        if parser.index != bytes.count { throw parser.error("unexpected data after the JSON value") }
        return value
    }

    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        let result: Result<JSONValue, JSONParseError> = bytes.withUnsafeBufferPointer { buffer in
            do throws(JSONParseError) { return .success(try parse(buffer)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        var text = text
        let result: Result<JSONValue, JSONParseError> = text.withUTF8 { buffer in
            do throws(JSONParseError) { return .success(try parse(buffer)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Checks that `bytes` hold exactly one JSON value without building it.
    public static func validate(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONParseError) {
        var parser = JSONParser(bytes)
        parser.skipWhitespace()
        try parser.skipValue()
        parser.skipWhitespace()
        if parser.index != bytes.count { throw parser.error("unexpected data after the JSON value") }
    }

    /// Whether valid JSON `bytes` are compact: no white space outside strings, so no line
    /// break at all (a string cannot hold a raw one). `bytes` must have passed ``validate(_:)``.
    public static func isCompact(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var inString = false
        var escaped = false
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
            } else if byte == UInt8(ascii: "\"") {
                inString = true
            } else if byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 {
                return false
            }
        }
        return true
    }

    private func error(_ reason: String) -> JSONParseError { JSONParseError(reason: reason, offset: index) }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return
            }
        }
    }

    private mutating func parseValue() throws(JSONParseError) -> JSONValue {
        guard index < bytes.count else { throw error("unexpected end of input") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected character '\(Self.printable(bytes[index]))'")
        }
    }

    private mutating func skipValue() throws(JSONParseError) {
        guard index < bytes.count else { throw error("unexpected end of input") }
        switch bytes[index] {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let isObject = bytes[index] == UInt8(ascii: "{")
            try enter()
            index += 1
            skipWhitespace()
            let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
            if index < bytes.count, bytes[index] == close {
                index += 1
                depth -= 1
                return
            }
            while true {
                if isObject {
                    guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a string key") }
                    try skipString()
                    skipWhitespace()
                    try expect(UInt8(ascii: ":"), "expected ':' after an object key")
                    skipWhitespace()
                }
                try skipValue()
                skipWhitespace()
                guard index < bytes.count else { throw error("unexpected end of input") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    skipWhitespace()
                } else if bytes[index] == close {
                    index += 1
                    depth -= 1
                    return
                } else {
                    throw error(isObject ? "expected ',' or '}'" : "expected ',' or ']'")
                }
            }
        case UInt8(ascii: "\""): try skipString()
        case UInt8(ascii: "t"): try expectLiteral("true")
        case UInt8(ascii: "f"): try expectLiteral("false")
        case UInt8(ascii: "n"): try expectLiteral("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): _ = try scanNumber()
        default: throw error("unexpected character '\(Self.printable(bytes[index]))'")
        }
    }

    private mutating func enter() throws(JSONParseError) {
        depth += 1
        if depth > Self.maxDepth { throw error("nesting deeper than \(Self.maxDepth) levels") }
    }

    private mutating func expect(_ byte: UInt8, _ message: String) throws(JSONParseError) {
        guard index < bytes.count, bytes[index] == byte else { throw error(message) }
        index += 1
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONParseError) {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - index >= count else { throw error("unexpected end of input") }
        let p = literal.utf8Start
        for i in 0..<count where bytes[index + i] != p[i] {
            throw error("invalid literal, expected '\(literal)'")
        }
        index += count
    }

    private mutating func parseObject() throws(JSONParseError) -> JSONValue {
        try enter()
        index += 1
        skipWhitespace()
        var members: [(key: String, value: JSONValue)] = []
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            depth -= 1
            return .object(JSONObject(members))
        }
        // Room for a typical small object at once, not grown 1, 2, 4 by appends.
        members.reserveCapacity(4)
        while true {
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                throw error(index < bytes.count ? "expected a string key" : "unexpected end of input")
            }
            let key = try parseString()
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "expected ':' after an object key")
            skipWhitespace()
            let value = try parseValue()
            members.append((key: key, value: value))
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                skipWhitespace()
            } else if bytes[index] == UInt8(ascii: "}") {
                index += 1
                depth -= 1
                return .object(JSONObject(members))
            } else {
                throw error("expected ',' or '}'")
            }
        }
    }

    private mutating func parseArray() throws(JSONParseError) -> JSONValue {
        try enter()
        index += 1
        skipWhitespace()
        var elements: [JSONValue] = []
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            depth -= 1
            return .array(elements)
        }
        elements.reserveCapacity(4)
        while true {
            elements.append(try parseValue())
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                skipWhitespace()
            } else if bytes[index] == UInt8(ascii: "]") {
                index += 1
                depth -= 1
                return .array(elements)
            } else {
                throw error("expected ',' or ']'")
            }
        }
    }

    /// Scans a number and reports whether it is an integer literal. Every number is accepted,
    /// by `validate` and `parse` alike: those that `.int` and `.double` cannot hold become
    /// `.number`.
    private mutating func scanNumber() throws(JSONParseError) -> (start: Int, isInteger: Bool) {
        let start = index
        var isInteger = true
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, Self.isDigit(bytes[index]) else { throw error("invalid number") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
            if index < bytes.count, Self.isDigit(bytes[index]) { throw error("leading zeros are not allowed in numbers") }
        } else {
            while index < bytes.count, Self.isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard index < bytes.count, Self.isDigit(bytes[index]) else { throw error("expected a digit after '.'") }
            while index < bytes.count, Self.isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, Self.isDigit(bytes[index]) else { throw error("expected a digit in the exponent") }
            while index < bytes.count, Self.isDigit(bytes[index]) { index += 1 }
        }
        return (start, isInteger)
    }

    private mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let (start, isInteger) = try scanNumber()
        if isInteger, index - start <= 19 {
            var i = start
            let negative = bytes[i] == UInt8(ascii: "-")
            if negative { i += 1 }
            var value: Int64 = 0
            var overflow = false
            while i < index {
                let digit = Int64(bytes[i] &- UInt8(ascii: "0"))
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) = negative ? m.subtractingReportingOverflow(digit) : m.addingReportingOverflow(digit)
                if o1 || o2 { overflow = true; break }
                value = a
                i += 1
            }
            // `-0` is the double -0.0: an Int64 has no negative zero.
            if !overflow { return value == 0 && negative ? .double(-0.0) : .int(value) }
        }
        let literal = UnsafeBufferPointer(rebasing: bytes[start..<index])
        let text = String(decoding: literal, as: UTF8.self)
        // Double(String) reads every JSON number, rounding to ±0 or ±infinity out of range.
        let double = Double(text) ?? .nan
        if JSONNumber.isExact(double, literal: literal) { return .double(double) }
        return .number(JSONNumber(unchecked: text))
    }

    /// Advances past printable ASCII other than '"' and '\\', eight bytes at a time.
    @inline(__always)
    private mutating func skipPlainStringBytes() {
        let count = bytes.count
        if let base = bytes.baseAddress {
            let raw = UnsafeRawPointer(base)
            let ones: UInt64 = 0x0101_0101_0101_0101
            let high: UInt64 = 0x8080_8080_8080_8080
            while index + 8 <= count {
                let x = raw.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                let control = (x &- ones &* 0x20) & ~x & high
                let q = x ^ (ones &* 0x22)
                let b = x ^ (ones &* 0x5C)
                let special = control | ((q &- ones) & ~q & high) | ((b &- ones) & ~b & high) | (x & high)
                if special != 0 { break }
                index += 8
            }
        }
        while index < count {
            let c = bytes[index]
            if c < 0x20 || c >= 0x80 || c == 0x22 || c == 0x5C { return }
            index += 1
        }
    }

    private mutating func skipString() throws(JSONParseError) {
        index += 1
        while index < bytes.count {
            skipPlainStringBytes()
            guard index < bytes.count else { break }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                index += 1
                return
            } else if byte == UInt8(ascii: "\\") {
                index += 1
                guard index < bytes.count else { break }
                if bytes[index] == UInt8(ascii: "u") {
                    let unit = try skipHexEscape()
                    // A surrogate must come as a high-low pair: a lone one is no character,
                    // and replacing it would make different strings (keys) equal.
                    if (0xDC00...0xDFFF).contains(unit) {
                        index -= 6
                        throw error("lone UTF-16 surrogate \\u\(String(unit, radix: 16)) (a low surrogate without a high one before it)")
                    }
                    if (0xD800...0xDBFF).contains(unit) {
                        guard bytes.count - index > 5, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            index -= 6
                            throw error("lone UTF-16 surrogate \\u\(String(unit, radix: 16)) (a high surrogate must be followed by a low one)")
                        }
                        index += 1
                        let low = try skipHexEscape()
                        guard (0xDC00...0xDFFF).contains(low) else {
                            index -= 12
                            throw error("lone UTF-16 surrogate \\u\(String(unit, radix: 16)) (followed by \\u\(String(low, radix: 16)), not a low surrogate)")
                        }
                    }
                } else {
                    switch bytes[index] {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                        UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                        index += 1
                    default: throw error("invalid escape sequence")
                    }
                }
            } else if byte < 0x20 {
                throw error("unescaped control character in string")
            } else if byte < 0x80 {
                index += 1
            } else {
                try skipUTF8Scalar()
            }
        }
        throw error("unterminated string")
    }

    /// Skips `uXXXX` (index at the `u`) and returns the code unit.
    private mutating func skipHexEscape() throws(JSONParseError) -> UInt32 {
        guard bytes.count - index > 4 else {
            index = bytes.count
            throw error("unterminated string")
        }
        var value: UInt32 = 0
        for k in 1...4 {
            guard let digit = Self.hexValue(bytes[index + k]) else {
                index += k
                throw error("invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
        }
        index += 5
        return value
    }

    private mutating func skipUTF8Scalar() throws(JSONParseError) {
        let lead = bytes[index]
        let length: Int
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0...0xEF: length = 3
        case 0xF0...0xF4: length = 4
        default: throw error("invalid UTF-8")
        }
        guard bytes.count - index >= length else { throw error("invalid UTF-8") }
        for k in 1..<length where bytes[index + k] & 0xC0 != 0x80 { throw error("invalid UTF-8") }
        let second = bytes[index + 1]
        if (lead == 0xE0 && second < 0xA0) || (lead == 0xED && second > 0x9F)
            || (lead == 0xF0 && second < 0x90) || (lead == 0xF4 && second > 0x8F)
        {
            throw error("invalid UTF-8")
        }
        index += length
    }

    private mutating func parseString() throws(JSONParseError) -> String {
        let start = index + 1
        // Fast path: plain ASCII up to the closing quote.
        index = start
        skipPlainStringBytes()
        if index < bytes.count, bytes[index] == UInt8(ascii: "\"") {
            index += 1
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<(index - 1)]), as: UTF8.self)
        }
        // Validate (UTF-8, escapes, control characters), then decode.
        var i = start
        while i < bytes.count, bytes[i] != UInt8(ascii: "\"") && bytes[i] != UInt8(ascii: "\\") { i += 1 }
        if i < bytes.count, bytes[i] == UInt8(ascii: "\"") {
            index = start - 1
            try skipString()
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        }
        index = start - 1
        let end = index
        try skipString()
        let stop = index - 1
        index = end + 1
        var out: [UInt8] = []
        out.reserveCapacity(stop - index)
        while index < stop {
            let byte = bytes[index]
            if byte != UInt8(ascii: "\\") {
                out.append(byte)
                index += 1
                continue
            }
            index += 1
            let escape = bytes[index]
            index += 1
            switch escape {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            default:
                var scalar = readHex4()
                if (0xD800...0xDBFF).contains(scalar), stop - index >= 6, bytes[index] == UInt8(ascii: "\\"),
                    bytes[index + 1] == UInt8(ascii: "u")
                {
                    let save = index
                    index += 2
                    let low = readHex4()
                    if (0xDC00...0xDFFF).contains(low) {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        index = save
                    }
                }
                let unicode = Unicode.Scalar(scalar) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(Character(unicode)).utf8))
            }
        }
        index = stop + 1
        return String(decoding: out, as: UTF8.self)
    }

    private mutating func readHex4() -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            value = value << 4 | UInt32(Self.hexValue(bytes[index]) ?? 0)
            index += 1
        }
        return value
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte &- UInt8(ascii: "0") < 10 }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func printable(_ byte: UInt8) -> String {
        byte >= 0x20 && byte < 0x7F ? String(UnicodeScalar(byte)) : "\\u{\(String(byte, radix: 16))}"
    }
}

extension JSONValue {
    /// Parses a JSON document from UTF-8 bytes.
    public init(parsing bytes: [UInt8]) throws(JSONParseError) { self = try JSONParser.parse(bytes) }

    /// Parses a JSON document from a string.
    public init(parsing text: String) throws(JSONParseError) { self = try JSONParser.parse(text) }
}
