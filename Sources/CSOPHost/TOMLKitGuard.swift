/// Finds the TOML that TOMLKit must not be handed: TOMLKit 0.6.0's toml++ 3.4.0 checks some
/// of its own assumptions with `assert`, which aborts the process in builds without `NDEBUG`
/// (the debug builds `swift build` and the tests make) where a release build reports a parse
/// error. ``PluginConfigFile/parse(_:path:)`` asks first and answers those inputs with a
/// ``PluginConfigError`` instead.
///
/// The inputs known (found by fuzzing):
/// - a table header whose first key character cannot start a key — `[=]`, `[.a]`, `[é]`,
///   `[[ + ]]`, or `[` at the end of a line: toml++ asserts in `parse_key` before it checks
///   that character;
/// - a value that starts as a date and a `T` not followed by a digit (`1979-05-27Tx:00`):
///   toml++ picks the value's type from the characters it holds, then asserts in
///   `parse_time` that the time starts with a digit;
/// - an array element that starts with `}` or a Unicode line separator (U+0085, U+2028,
///   U+2029): `parse_array` hands it to `parse_value`, which asserts that a value does not
///   start with what ends one;
/// - a value of ten characters shaped like a date (`-` fifth and eighth), a space, one digit
///   and then the end of the value (`1979-05-27 7`): toml++ reads on for a time after the
///   space, and asserts that the second digit is not where the value ends.
///
/// A `[` opens a table header only at the start of a top-level statement, and a value comes
/// only after `=` or in an array, so the scan follows TOML's strings, comments, arrays and
/// inline tables to know where those are: a valid document is never refused.
enum TOMLKitGuard {
    /// The first place toml++ would abort on, as its 1-based line and a message saying what
    /// to fix; nil when there is none.
    static func problem(in text: String) -> (line: Int, message: String)? {
        let bytes = Array(text.utf8)
        var index = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        var line = 1
        // The open `[` and `{` of the value being read: a newline inside an array does not
        // end it, and after a `,` comes a value in an array but a key in an inline table.
        var containers: [UInt8] = []
        var atStatementStart = true
        var inHeader = false
        // The last byte that is not blank, a line break or in a comment.
        var previous: UInt8 = 0x0A
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case 0x0A:
                line += 1
                if containers.isEmpty {
                    atStatementStart = true
                    inHeader = false
                    previous = 0x0A
                }
                index += 1
                continue
            case 0x20, 0x09, 0x0D:
                index += 1
                continue
            case UInt8(ascii: "#"):
                while index + 1 < bytes.count, bytes[index + 1] != 0x0A { index += 1 }
                index += 1
                continue
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                index = skipString(bytes, at: index, line: &line)
                atStatementStart = false
                previous = byte
                continue
            case UInt8(ascii: "[") where atStatementStart:
                if let message = headerProblem(bytes, at: index) { return (line, message) }
                inHeader = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                if !inHeader { containers.append(byte) }
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                if byte == UInt8(ascii: "}"), !inHeader, isArrayElementStart(previous, containers) {
                    return (line, "an array holds a '}' where a value should be: remove it, or close the array with ']'")
                }
                if !inHeader, !containers.isEmpty { containers.removeLast() }
            case 0xC2, 0xE2:
                let separator =
                    byte == 0xC2
                    ? index + 1 < bytes.count && bytes[index + 1] == 0x85
                    : index + 2 < bytes.count && bytes[index + 1] == 0x80 && (bytes[index + 2] == 0xA8 || bytes[index + 2] == 0xA9)
                if separator, !inHeader, isArrayElementStart(previous, containers) {
                    return (line, "an array holds a Unicode line separator (U+0085, U+2028 or U+2029) where a value should be: remove it")
                }
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                let startsToken = index == 0 || isTokenBoundary(bytes[index - 1])
                let isValue = !inHeader && (previous == UInt8(ascii: "=") || isArrayElementStart(previous, containers))
                if startsToken, isValue, startsDateThenTimeWithoutDigit(bytes, at: index) {
                    return (
                        line,
                        "a value that starts as a date must go on with a time after its T (1979-05-27T07:32:00); quote anything else (\"1979-05-27T…\")"
                    )
                }
                if startsToken, isValue, isDateThenSpaceAndOneDigit(bytes, at: index) {
                    return (
                        line,
                        "a date followed by a space must go on with a whole time (1979-05-27 07:32:00); quote anything else (\"1979-05-27 7\")"
                    )
                }
            default:
                break
            }
            atStatementStart = false
            previous = byte
            index += 1
        }
        return nil
    }

    /// Whether an array element comes next: just after the array's `[` or a `,` in it.
    static func isArrayElementStart(_ previous: UInt8, _ containers: [UInt8]) -> Bool {
        containers.last == UInt8(ascii: "[") && (previous == UInt8(ascii: "[") || previous == UInt8(ascii: ","))
    }

    static func isTokenBoundary(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x20, 0x09, 0x0A, 0x0D, UInt8(ascii: "="), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "{"), UInt8(ascii: "}"),
            UInt8(ascii: ","):
            true
        default: false
        }
    }

    /// Whether `YYYY-MM-DD` and `T` (or `t`) start at `start`, followed by anything but a digit.
    static func startsDateThenTimeWithoutDigit(_ bytes: [UInt8], at start: Int) -> Bool {
        guard bytes.count - start > 11 else { return false }
        func isDigit(_ offset: Int) -> Bool { bytes[start + offset] &- UInt8(ascii: "0") < 10 }
        return isDigit(0) && isDigit(1) && isDigit(2) && isDigit(3) && bytes[start + 4] == UInt8(ascii: "-") && isDigit(5)
            && isDigit(6) && bytes[start + 7] == UInt8(ascii: "-") && isDigit(8) && isDigit(9)
            && (bytes[start + 10] == UInt8(ascii: "T") || bytes[start + 10] == UInt8(ascii: "t")) && !isDigit(11)
    }

    /// Whether the value at `start` is what toml++ asserts on after reading it as a date with
    /// a space for its `T`: ten characters up to the end of the value (underscores are not
    /// counted), `-` fifth and eighth, then a space, one digit, and the end of the value. (At
    /// the end of the text it stops without asserting.) No valid TOML matches: a date and a
    /// time need two digits of hours.
    static func isDateThenSpaceAndOneDigit(_ bytes: [UInt8], at start: Int) -> Bool {
        var scalars = String(decoding: bytes[start..<min(bytes.count, start + 512)], as: UTF8.self).unicodeScalars.makeIterator()
        var characters: [Unicode.Scalar] = []
        var next = scalars.next()
        while let scalar = next, !endsValue(scalar) {
            if scalar != "_" { characters.append(scalar) }
            if characters.count > 10 { return false }
            next = scalars.next()
        }
        guard characters.count == 10, characters[4] == "-", characters[7] == "-", next == " " else { return false }
        guard let digit = scalars.next(), ("0"..."9").contains(digit), let after = scalars.next() else { return false }
        return endsValue(after)
    }

    /// toml++'s `is_value_terminator`: white space (Unicode's too), `]`, `}`, `,` and `#`.
    static func endsValue(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || scalar == "]" || scalar == "}" || scalar == "," || scalar == "#"
    }

    /// What is wrong with the table header opening at `start`, when toml++ would assert on it.
    static func headerProblem(_ bytes: [UInt8], at start: Int) -> String? {
        var index = start + 1
        func skipBlanks() -> Bool {
            let from = index
            while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
            return index > from
        }
        let spaced = skipBlanks()
        if index < bytes.count, bytes[index] == UInt8(ascii: "[") {
            // `[ [` is an error toml++ reports itself.
            if spaced { return nil }
            index += 1
            _ = skipBlanks()
        }
        guard index < bytes.count else { return nil }
        let byte = bytes[index]
        if isBareKeyByte(byte) || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") || byte == UInt8(ascii: "]") { return nil }
        let found: String
        switch byte {
        case 0x0A, 0x0D: found = "the end of the line: write the header's name on the same line, [name] or [[name]]"
        case 0x21...0x7E: found = "'\(Character(Unicode.Scalar(byte)))'"
        case 0x80...: found = "a non-ASCII character: quote such a key, [\"é\"]"
        default: found = "the control character U+\(String(byte, radix: 16, uppercase: true))"
        }
        return "a table header must start with a key, bare (A-Z, a-z, 0-9, _ and -) or quoted (\"a key\"); found \(found)"
    }

    static func isBareKeyByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    /// The index after the string opening at `start` (basic or literal, one-line or
    /// multi-line), or where an unterminated one-line string ends: the end of its line.
    static func skipString(_ bytes: [UInt8], at start: Int, line: inout Int) -> Int {
        let quote = bytes[start]
        let basic = quote == UInt8(ascii: "\"")
        let multiline = start + 2 < bytes.count && bytes[start + 1] == quote && bytes[start + 2] == quote
        var index = start + (multiline ? 3 : 1)
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0x0A {
                if !multiline { return index }
                line += 1
            } else if basic && byte == UInt8(ascii: "\\") {
                if index + 1 < bytes.count, bytes[index + 1] == 0x0A { line += 1 }
                index += 2
                continue
            } else if byte == quote {
                guard multiline else { return index + 1 }
                var run = 0
                while index + run < bytes.count, bytes[index + run] == quote { run += 1 }
                // Up to two quotes before the closing three belong to the string.
                if run >= 3 { return index + run }
                index += run
                continue
            }
            index += 1
        }
        return index
    }
}
