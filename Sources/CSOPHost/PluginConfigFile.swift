public import CSOPCore

/// One parsed plugins.d entry.
///
/// The format is a small, hand-editable subset of TOML:
/// ```
/// # comments start with '#'
/// library = "libcsop-storage.so"   # required
/// enabled = true                   # optional, default true
///
/// [config]                         # handed to the plugin as a JSON object
/// path = "/var/lib/csop/hot.sqlite"
/// maxLocalSize = 5242880
/// ```
/// Values are double- or single-quoted strings, integers, decimals, `true` or `false`.
public struct PluginConfigFile: Sendable, Equatable {
    public var path: String
    public var library: String
    public var enabled: Bool
    /// Optional domain the library must serve, checked after loading.
    public var expectedName: String?
    public var config: JSONObject

    /// Parses the text of the file at `path`.
    /// - Throws: ``PluginConfigError`` naming the file and line.
    public static func parse(_ text: String, path: String) throws(PluginConfigError) -> PluginConfigFile {
        var library: String?
        var enabled = true
        var expectedName: String?
        var config = JSONObject()
        var section = ""
        var seen: Set<String> = []
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = number + 1
            func fail(_ message: String) -> PluginConfigError { PluginConfigError(file: path, line: lineNumber, message: message) }
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]") else { throw fail("section header must look like [config]") }
                section = String(line.dropFirst().dropLast()).trimmingWhitespace()
                guard section == "config" else { throw fail("unknown section [\(section)]; the only section is [config]") }
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                throw fail("expected key = value, got \"\(line.prefix(60))\"")
            }
            let key = String(line[..<equals]).trimmingWhitespace()
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." }) else {
                throw fail("invalid key \"\(key)\"; keys use letters, digits, '_', '-' and '.'")
            }
            let qualified = section.isEmpty ? key : "\(section).\(key)"
            guard seen.insert(qualified).inserted else { throw fail("duplicate key \"\(key)\"") }
            let value: JSONValue
            do throws(PluginConfigError.Reason) {
                value = try parseValue(String(line[line.index(after: equals)...]).trimmingWhitespace())
            } catch {
                throw fail("\(error.text) for \"\(key)\"")
            }
            if section == "config" {
                config[key] = value
                continue
            }
            switch key {
            case "library":
                guard case .string(let text) = value, !text.isEmpty else { throw fail("library must be a non-empty string") }
                library = text
            case "enabled":
                guard case .bool(let flag) = value else { throw fail("enabled must be true or false") }
                enabled = flag
            case "name":
                guard case .string(let text) = value, !text.isEmpty else { throw fail("name must be a non-empty string") }
                expectedName = text
            default:
                throw fail("unknown key \"\(key)\"; top-level keys are library, enabled and name (plugin settings go under [config])")
            }
        }
        guard let library else {
            throw PluginConfigError(file: path, line: nil, message: "missing required key library = \"libNAME.so\"")
        }
        return PluginConfigFile(path: path, library: library, enabled: enabled, expectedName: expectedName, config: config)
    }

    /// The text of an entry that ``parse(_:path:)`` reads back as the same values.
    public static func render(library: String, enabled: Bool = true, config: JSONObject = JSONObject()) -> String {
        var text = "library = \(quote(library))\nenabled = \(enabled)\n"
        if !config.isEmpty {
            text += "\n[config]\n"
            for member in config.members { text += "\(member.key) = \(renderValue(member.value))\n" }
        }
        return text
    }

    private static func renderValue(_ value: JSONValue) -> String {
        switch value {
        case .string(let text): quote(text)
        case .bool(let flag): String(flag)
        case .int(let number): String(number)
        case .double(let number): String(number)
        default: quote(value.jsonString)
        }
    }

    private static func quote(_ text: String) -> String {
        var out = "\""
        for c in text {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default: out.append(c)
            }
        }
        return out + "\""
    }

    private static func parseValue(_ text: String) throws(PluginConfigError.Reason) -> JSONValue {
        guard let first = text.first else { throw .init("missing value") }
        if first == "\"" || first == "'" {
            var result = ""
            var index = text.index(after: text.startIndex)
            var closed = false
            while index < text.endIndex {
                let c = text[index]
                if c == first {
                    closed = true
                    index = text.index(after: index)
                    break
                }
                if c == "\\" && first == "\"" {
                    index = text.index(after: index)
                    guard index < text.endIndex else { break }
                    switch text[index] {
                    case "n": result.append("\n")
                    case "t": result.append("\t")
                    case "\\": result.append("\\")
                    case "\"": result.append("\"")
                    default: throw .init("unknown escape \\\(text[index])")
                    }
                } else {
                    result.append(c)
                }
                index = text.index(after: index)
            }
            guard closed else { throw .init("unterminated string") }
            let rest = String(text[index...]).trimmingWhitespace()
            guard rest.isEmpty || rest.hasPrefix("#") else { throw .init("unexpected text after the string") }
            return .string(result)
        }
        var bare = text
        if let hash = bare.firstIndex(of: "#") { bare = String(bare[..<hash]).trimmingWhitespace() }
        switch bare {
        case "true": return .bool(true)
        case "false": return .bool(false)
        default: break
        }
        let digits = bare.replacingUnderscores()
        if let int = Int64(digits) { return .int(int) }
        if let double = Double(digits), double.isFinite, digits.first != "+" || digits.count > 1 { return .double(double) }
        throw .init("value \(bare) is not a quoted string, number, true or false")
    }
}

/// A plugins.d file that could not be read, naming the file and line.
public struct PluginConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var message: String

    public var description: String {
        if let line { "\(file):\(line): \(message)" } else { "\(file): \(message)" }
    }

    struct Reason: Error {
        var text: String
        init(_ text: String) { self.text = text }
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let end = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(String.UnicodeScalarView(scalars[start...end]))
    }

    func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}
