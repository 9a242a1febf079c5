import CSOPCore
import Testing

@Suite struct JSONTests {
    @Test(arguments: [
        #"{"a":1,"b":[true,false,null],"c":"x\"y\\z\n","d":-2.5,"e":{}}"#,
        #"[]"#, #"{}"#, #""""#, #"0"#, #"-9223372036854775808"#, #"9223372036854775807"#, #"1.5e+300"#,
        #"{"z":1,"a":2}"#, #""é😀\u0001""#,
    ])
    func compactDocumentsRoundTrip(_ text: String) throws {
        let value = try JSONValue(parsing: text)
        let again = try JSONValue(parsing: value.jsonString)
        #expect(again == value)
    }

    @Test func keepsMemberOrderAndTypes() throws {
        let value = try JSONValue(parsing: #"{"z":1,"a":2.0,"m":"s"}"#)
        #expect(value.objectValue?.keys == ["z", "a", "m"])
        #expect(value["z"] == .int(1))
        #expect(value["a"] == .double(2))
        #expect(value.jsonString == #"{"z":1,"a":2.0,"m":"s"}"#)
    }

    /// Response durations: the integer formatting writes what Double's would for the value
    /// rounded to thousandths, across magnitudes, halves, signs and both zeros.
    @Test func thousandthsAreWrittenAsTheRoundedDouble() {
        var values: [Double] = [0, -0.0, 0.0004, 0.0005, 0.001, 0.012, 0.1, 0.5, 1, 1.5, 2.25, 11.183, 99.9995, 1234.5678, 1e11 + 0.5, 1e12, 3e15, .infinity, .nan]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 { values.append(Double.random(in: 0..<100_000, using: &generator) / Double([1, 10, 1000, 1e6].randomElement()!)) }
        values += values.map { -$0 }
        for value in values {
            var fast = JSONWriter()
            fast.writeThousandths(value)
            var reference = JSONWriter()
            reference.writeDouble((value * 1000).rounded() / 1000)
            #expect(fast.bytes == reference.bytes, "\(value)")
        }
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        let value = try JSONValue(parsing: #""a\u00e9\ud83d\ude00\t\/""#)
        #expect(value == .string("aé😀\t/"))
    }

    @Test func escapesControlCharactersOnOutput() {
        #expect(JSONValue.string("a\u{01}\"\n").jsonString == #""a\u0001\"\n""#)
    }

    @Test func integersBeyond64BitsKeepTheirDigits() throws {
        let value = try JSONValue(parsing: "18446744073709551616")
        #expect(value == .number(JSONNumber("18446744073709551616")!))
        #expect(value.jsonString == "18446744073709551616")
        #expect(value.doubleValue == 18446744073709551616)
        #expect(value.int64Value == nil)
    }

    /// Each number comes back from parse → write as the same number (the text on the right),
    /// and parsing that gives the same value again.
    @Test(arguments: [
        ("-0", "-0.0"), ("-0.0", "-0.0"), ("0", "0"), ("0.0", "0.0"), ("-0e5", "-0.0"),
        ("123456789012345678901234567890", "123456789012345678901234567890"),
        ("18446744073709551616", "18446744073709551616"), ("-9223372036854775809", "-9223372036854775809"),
        ("1e-400", "1e-400"), ("-1e-400", "-1e-400"), ("1e400", "1e400"), ("1E400", "1E400"),
        ("1.5e308", "1.5e+308"), ("5e-324", "5e-324"), ("2.2250738585072014e-308", "2.2250738585072014e-308"),
        ("4.9e-324", "4.9e-324"), ("0.30000000000000004", "0.30000000000000004"), ("0.30000000000000001", "0.30000000000000001"),
        ("0.1", "0.1"), ("1e2", "100.0"), ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("1.7976931348623159e308", "1.7976931348623159e308"), ("10000000000000000000", "1e+19"),
        ("9223372036854775807", "9223372036854775807"), ("9223372036854775807.0", "9223372036854775807.0"),
    ])
    func numbersRoundTripExactly(_ text: String, _ written: String) throws {
        let value = try JSONValue(parsing: text)
        #expect(value.jsonString == written)
        #expect(try JSONValue(parsing: value.jsonString) == value)
        #expect(try RawJSON(validating: Array(text.utf8)).value == value)
    }

    @Test func numberKindsAndEquality() throws {
        #expect(try JSONValue(parsing: "-0") == .double(-0.0))
        #expect(JSONValue.double(-0.0) != .double(0.0))
        #expect(JSONValue.int(1) != .double(1.0))
        #expect(JSONValue.double(.nan) == .double(.nan))
        #expect(Set<JSONValue>([.double(0.0), .double(-0.0), .int(0)]).count == 3)
        #expect(try JSONValue(parsing: "1e-400") == .number(JSONNumber("1e-400")!))
        #expect(try JSONValue(parsing: "1e400").doubleValue == .infinity)
        #expect(try JSONValue(parsing: "1e-400").doubleValue == 0)
        #expect(try JSONValue(parsing: "9223372036854775807.0").int64Value == .max)
        #expect(try JSONValue(parsing: "1.5e3").int64Value == 1500)
        #expect(try JSONValue(parsing: "9223372036854775808.0").int64Value == nil)
        #expect(JSONNumber("1.") == nil && JSONNumber("+1") == nil && JSONNumber("01") == nil && JSONNumber("") == nil)
        #expect(JSONNumber("-1.5E+3")?.int64Value == -1500)
    }

    /// The fuzzer's find: the validator accepted `1e400`, which the parser refused (so such a
    /// plugin result read back as null). Both accept every number now, and agree.
    @Test(arguments: ["1e400", "-1e400", "[1e400]", "{\"a\":1e-400}", "1e99999999999999999999"])
    func validationAndParsingAgreeOnOutOfRangeNumbers(_ text: String) throws {
        let raw = try RawJSON(validating: Array(text.utf8))
        let parsed = try JSONValue(parsing: text)
        #expect(raw.value == parsed)
        #expect(parsed.jsonString == text)
    }

    @Test(arguments: [
        ("", "unexpected end of input"), ("{", "unexpected end of input"), ("[1,]", "unexpected character"),
        ("{\"a\" 1}", "expected ':'"), ("01", "leading zeros"), ("1.", "expected a digit"), ("tru", "unexpected end"),
        ("\"a\u{01}\"", "control character"), ("{} x", "unexpected data after"), ("nul", "unexpected end"),
        ("\"\\x\"", "invalid escape"), ("{'a':1}", "expected a string key"),
    ])
    func rejectsMalformedInput(_ text: String, _ reason: String) {
        #expect {
            try JSONValue(parsing: text)
        } throws: { error in
            (error as? JSONParseError)?.reason.contains(reason) == true
        }
    }

    @Test func rejectsInvalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: [0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: [0x22, 0xED, 0xA0, 0x80, 0x22]) }
    }

    @Test func deepNestingIsAnErrorNotACrash() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: deep) }
        let ok = String(repeating: "[", count: 500) + String(repeating: "]", count: 500)
        #expect(throws: Never.self) { try JSONValue(parsing: ok) }
    }

    @Test func validateAgreesWithParse() throws {
        for text in [#"{"a":[1,{"b":null}]}"#, #"[1,2"#, #"{"a":}"#, "\"\\u12\""] {
            let parses = (try? JSONValue(parsing: text)) != nil
            var copy = text
            let validates = copy.withUTF8 { (try? JSONParser.validate($0)) != nil }
            #expect(parses == validates, "\(text)")
        }
    }

    @Test func nonFiniteDoublesAreWrittenAsNull() {
        #expect(JSONValue.double(.infinity).jsonString == "null")
        #expect(JSONValue.double(.nan).jsonString == "null")
    }

    /// Strings of every length around the 8-byte scanning stride, with a special character
    /// at every position, round-trip, and a raw control character anywhere is rejected.
    @Test func specialCharactersAtEveryPositionOfLongStrings() throws {
        let specials: [Character] = ["\"", "\\", "\n", "\u{01}", "é", "😀", "\u{7F}", "/"]
        for length in 0..<34 {
            for position in 0..<max(length, 1) {
                for special in specials {
                    var characters = Array(repeating: Character("a"), count: length)
                    if length > 0 { characters[position] = special }
                    let text = String(characters)
                    #expect(try JSONValue(parsing: JSONValue.string(text).serialized()) == .string(text))
                }
                guard length > 0 else { continue }
                var raw = Array(repeating: UInt8(ascii: "a"), count: length)
                raw[position] = 0x1F
                #expect(throws: JSONParseError.self) { try JSONValue(parsing: [0x22] + raw + [0x22]) }
                raw[position] = 0xFF
                #expect(throws: JSONParseError.self) { try JSONValue(parsing: [0x22] + raw + [0x22]) }
            }
        }
    }

    /// The writer's eight-byte scan against a byte-by-byte escaper, on strings dense with
    /// characters that need escaping, in runs and alone, at every alignment.
    @Test func writerEscapesAsAByteByByteWriterDoes() {
        let alphabet: [Character] = ["a", "b", "\"", "\\", "\n", "\u{01}", "\u{1F}", "\t", "é", "😀", "\u{7F}", " "]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            let length = Int.random(in: 0...80, using: &generator)
            let plainRun = Int.random(in: 0...20, using: &generator)
            let text = String((0..<length).map { _ in Bool.random(using: &generator) ? Character("x") : alphabet.randomElement(using: &generator)! })
            let padded = String(repeating: "p", count: plainRun) + text
            #expect(JSONValue.string(padded).serialized() == Self.escaped(padded), "\(Array(padded.utf8))")
        }
    }

    private static func escaped(_ text: String) -> [UInt8] {
        var out: [UInt8] = [0x22]
        for byte in text.utf8 {
            switch byte {
            case 0x22: out += Array(#"\""#.utf8)
            case 0x5C: out += Array(#"\\"#.utf8)
            case 0x0A: out += Array(#"\n"#.utf8)
            case 0x0D: out += Array(#"\r"#.utf8)
            case 0x09: out += Array(#"\t"#.utf8)
            case 0x08: out += Array(#"\b"#.utf8)
            case 0x0C: out += Array(#"\f"#.utf8)
            case ..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += Array(#"\u00"#.utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: out.append(byte)
            }
        }
        return out + [0x22]
    }
}

/// Lone UTF-16 surrogates are refused, never replaced: replacing them with U+FFFD made three
/// different storage keys one key.
@Suite struct JSONSurrogateTests {
    @Test(arguments: [#""\ud800""#, #""\udbff""#, #""\udc00""#, #""a\ud800b""#, #""\ud800\u0041""#, #""\ud800\ud800""#, #""\udfff\ud800""#])
    func loneSurrogatesAreRefused(text: String) {
        #expect {
            try JSONValue(parsing: text)
        } throws: { error in
            (error as? JSONParseError)?.description.contains("lone UTF-16 surrogate") == true
        }
        #expect(throws: JSONParseError.self) { try RawJSON(validating: Array(text.utf8)) }
    }

    @Test func pairedSurrogatesDecode() throws {
        #expect(try JSONValue(parsing: #""\ud83d\ude00 \uD83D\uDE00""#) == "😀 😀")
        #expect(try JSONValue(parsing: #"{"\ud800\udc00":1}"#) == ["\u{10000}": 1])
    }
}
