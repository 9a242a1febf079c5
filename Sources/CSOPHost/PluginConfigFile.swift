public import CSOPCore
import TOMLKit

/// One parsed plugins.d entry: a TOML document (TOML 1.0, parsed by TOMLKit).
///
/// ```toml
/// # comments start with '#'
/// library = "libcsop-storage.so"   # required
/// enabled = true                   # optional, default true
/// name = "storage"                 # optional: the domain the library must serve
///
/// [config]                         # handed to the plugin as a JSON object
/// path = "/var/lib/csop/hot.sqlite"
/// maxLocalSize = 5_242_880
/// tags = ["hot", "local"]          # arrays, inline and nested tables become JSON
/// [config.limits]
/// keys = 10_000
///
/// [circuit]                        # optional: a circuit breaker (see CircuitBreaker)
/// failures = 5                     # consecutive retryable failures that open it
/// coolDown = 30_000                # ms it stays open before one probe call
///
/// isolation = "process"            # optional (a top-level key): run it in a child process
/// [limits]                         # optional, with isolation = "process": the child's limits
/// memory = 1_073_741_824           # bytes of address space
/// cpuSeconds = 3600                # CPU time
/// openFiles = 1024                 # open file descriptors
/// ```
/// Tables become objects, arrays arrays, integers and floats numbers; dates, times, `inf`
/// and `nan` have no JSON form and are refused.
public struct PluginConfigFile: Sendable, Equatable {
    public var path: String
    public var library: String
    public var enabled: Bool
    /// Optional domain the library must serve, checked after loading.
    public var expectedName: String?
    public var config: JSONObject
    /// The circuit breaker's settings, when the entry has a `[circuit]` table.
    public var circuit: CircuitPolicy?
    /// Whether the plugin runs in the host's process (the default) or in a child of its own.
    public var isolation: PluginIsolation = .inProcess
    /// The child's resource limits (`[limits]`), with `isolation = "process"` only.
    public var limits = PluginLimits()

    /// Parses the text of the file at `path`.
    /// - Throws: ``PluginConfigError`` naming the file, and the line where it is known.
    public static func parse(_ text: String, path: String) throws(PluginConfigError) -> PluginConfigFile {
        let table = try table(text, path: path)
        func fail(_ key: String, _ message: String) -> PluginConfigError {
            PluginConfigError(file: path, line: Self.line(of: key, in: text), message: message)
        }
        var library: String?
        var enabled = true
        var expectedName: String?
        var config = JSONObject()
        var circuit: CircuitPolicy?
        var isolation = PluginIsolation.inProcess
        var limits = PluginLimits()
        for key in table.keys {
            guard let value = table[key] else { continue }
            switch key {
            case "library":
                guard let text = value.string, !text.isEmpty else { throw fail(key, "library must be a non-empty string") }
                library = text
            case "enabled":
                guard value.type == .bool, let flag = value.bool else { throw fail(key, "enabled must be true or false") }
                enabled = flag
            case "name":
                guard let text = value.string, !text.isEmpty else { throw fail(key, "name must be a non-empty string") }
                expectedName = text
            case "config":
                guard let section = value.table else { throw fail(key, "config must be a table: write [config] above the plugin's settings") }
                do throws(PluginConfigError.Reason) {
                    config = try Self.json(section, at: "config")
                } catch {
                    throw fail(error.key, error.text)
                }
            case "circuit":
                guard let section = value.table else { throw fail(key, "circuit must be a table: write [circuit] above failures and coolDown") }
                let json: JSONObject
                do throws(PluginConfigError.Reason) {
                    json = try Self.json(section, at: "circuit")
                } catch {
                    throw fail(error.key, error.text)
                }
                do throws(CSOPError) {
                    circuit = try CircuitPolicy(json: .object(json))
                } catch {
                    throw fail(key, error.message)
                }
            case "isolation":
                guard let text = value.string, let mode = PluginIsolation(rawValue: text) else {
                    throw fail(key, "isolation must be \"in-process\" (the default) or \"process\"")
                }
                isolation = mode
            case "limits":
                guard let section = value.table else { throw fail(key, "limits must be a table: write [limits] above memory, cpuSeconds and openFiles") }
                do throws(PluginConfigError.Reason) {
                    limits = try PluginLimits(json: try Self.json(section, at: "limits"))
                } catch {
                    throw fail(error.key, error.text)
                }
            default:
                let what = value.type == .table ? "unknown section [\(key)]; the sections are [config], [circuit] and [limits]" : "unknown key \"\(key)\""
                throw fail(key, "\(what); top-level keys are library, enabled, name and isolation (plugin settings go under [config])")
            }
        }
        guard let library else {
            throw PluginConfigError(file: path, line: nil, message: "missing required key library = \"libNAME.so\"")
        }
        if !limits.isEmpty, isolation != .process {
            throw fail("limits", "[limits] applies to a plugin in a child process: add isolation = \"process\"")
        }
        var entry = PluginConfigFile(path: path, library: library, enabled: enabled, expectedName: expectedName, config: config, circuit: circuit)
        entry.isolation = isolation
        entry.limits = limits
        return entry
    }

    /// Parses any TOML document (csop serve's config file, say) into JSON, by the rules an
    /// entry's `[config]` follows: the top-level keys become the object's members.
    /// - Throws: ``PluginConfigError`` naming the file, and the line where it is known.
    public static func document(_ text: String, path: String) throws(PluginConfigError) -> JSONObject {
        let table = try table(text, path: path)
        do throws(PluginConfigError.Reason) {
            return try json(table, at: "")
        } catch {
            throw PluginConfigError(file: path, line: Self.line(of: error.key, in: text), message: error.text)
        }
    }

    private static func table(_ text: String, path: String) throws(PluginConfigError) -> TOMLTable {
        // Text on which TOMLKit would abort the process (a debug build's assert) is refused here.
        if let problem = TOMLKitGuard.problem(in: text) {
            throw PluginConfigError(file: path, line: problem.line, message: problem.message)
        }
        do {
            return try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw PluginConfigError(file: path, line: error.source.begin.line, message: error.description)
        } catch {
            throw PluginConfigError(file: path, line: nil, message: "not a TOML document: \(error)")
        }
    }

    private static func json(_ table: TOMLTable, at path: String) throws(PluginConfigError.Reason) -> JSONObject {
        var object = JSONObject()
        for key in table.keys {
            guard let value = table[key] else { continue }
            object[key] = try json(value, at: path.isEmpty ? key : "\(path).\(key)", key: key)
        }
        return object
    }

    private static func json(_ value: any TOMLValueConvertible, at path: String, key: String) throws(PluginConfigError.Reason) -> JSONValue {
        switch value.type {
        case .string: return .string(value.string ?? "")
        case .bool: return .bool(value.bool ?? false)
        case .int: return .int(Int64(value.int ?? 0))
        case .double:
            let number = value.double ?? .nan
            guard number.isFinite else { throw .init(key, "\(path) is \(number); JSON has no infinity or NaN") }
            return .double(number)
        case .table:
            guard let table = value.table else { return .object(JSONObject()) }
            return .object(try json(table, at: path))
        case .array:
            guard let array = value.array else { return .array([]) }
            var items: [JSONValue] = []
            for (index, item) in array.enumerated() { items.append(try json(item, at: "\(path)[\(index)]", key: key)) }
            return .array(items)
        case .date, .time, .dateTime:
            throw .init(key, "\(path) is a TOML \(value.type); write it as a quoted string")
        }
    }

    /// The line where `key` is first assigned or opened as a table, for messages.
    static func line(of key: String, in text: String) -> Int? {
        // Split the bytes: "\r\n" is one Character, which a split on "\n" would not cut.
        for (number, raw) in text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
            let line = String(decoding: raw, as: UTF8.self).trimmingWhitespace()
            if line.hasPrefix("[") {
                let name = line.drop { $0 == "[" }.prefix { $0 != "]" }.trimmingWhitespace()
                if name == key || name.hasSuffix(".\(key)") { return number + 1 }
            } else if let equals = line.firstIndex(of: "=") {
                let name = line[..<equals].trimmingWhitespace()
                if name == key || name == "\"\(key)\"" || name == "'\(key)'" { return number + 1 }
            }
        }
        return nil
    }

    /// The text of an entry that ``parse(_:path:)`` reads back as the same values, except for
    /// what TOML cannot hold: nulls are left out, non-finite doubles are written `inf` or `nan`
    /// (which `parse` refuses), and a `.number` becomes its nearest double.
    public static func render(library: String, enabled: Bool = true, config: JSONObject = JSONObject()) -> String {
        var text = "library = \(quote(library))\nenabled = \(enabled)\n"
        if !config.isEmpty {
            text += "\n[config]\n"
            for member in config.members where !member.value.isNull {
                text += "\(renderKey(member.key)) = \(renderValue(member.value))\n"
            }
        }
        return text
    }

    private static func renderValue(_ value: JSONValue) -> String {
        switch value {
        case .null: ""
        case .string(let text): quote(text)
        case .bool(let flag): String(flag)
        case .int(let number): String(number)
        // The JSON writer's spelling of a finite double is a TOML float too (`-0.0`, `1e+300`).
        case .double(let number) where number.isFinite: value.jsonString
        case .double(let number): "\(number)"
        // TOML has no numbers beyond 64-bit integers and doubles: the nearest double, or the
        // text as a string when that is infinite.
        case .number(let number): number.doubleValue.isFinite ? JSONValue.double(number.doubleValue).jsonString : quote(number.text)
        case .array(let items): "[" + items.filter { !$0.isNull }.map(renderValue).joined(separator: ", ") + "]"
        case .object(let object):
            "{ " + object.members.filter { !$0.value.isNull }.map { "\(renderKey($0.key)) = \(renderValue($0.value))" }
                .joined(separator: ", ") + " }"
        }
    }

    private static func renderKey(_ key: String) -> String {
        let bare = !key.isEmpty && key.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
        return bare ? key : quote(key)
    }

    private static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    let hex = String(scalar.value, radix: 16, uppercase: true)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// A plugins.d file that could not be read, naming the file and line.
public struct PluginConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var message: String
    /// The failure kind when it is not a bad config (refused permissions).
    var kind: PluginLoadFailure.Kind?

    public init(file: String, line: Int?, message: String) {
        self.init(file: file, line: line, message: message, kind: nil)
    }

    init(file: String, line: Int?, message: String, kind: PluginLoadFailure.Kind?) {
        self.file = file
        self.line = line
        self.message = message
        self.kind = kind
    }

    public var description: String {
        if let line { "\(file):\(line): \(message)" } else { "\(file): \(message)" }
    }

    struct Reason: Error {
        var key: String
        var text: String
        init(_ key: String, _ text: String) {
            self.key = key
            self.text = text
        }
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let end = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(String.UnicodeScalarView(scalars[start...end]))
    }
}

/// Where a plugin runs.
public enum PluginIsolation: String, Sendable, Equatable {
    /// In the host's process: the fastest, and a crash of the plugin is a crash of the host.
    case inProcess = "in-process"
    /// In a child process of its own (the `csop` executable in plugin-host mode): a crash
    /// fails its calls in flight with `PLUGIN_CRASHED` and the child is restarted.
    case process
}

/// Resource limits of an isolated plugin's child process (`setrlimit`), from `[limits]`.
public struct PluginLimits: Sendable, Equatable {
    /// Bytes of address space (`RLIMIT_AS`): past it, allocations fail.
    public var memory: Int?
    /// Seconds of CPU time (`RLIMIT_CPU`): past it, the child is killed (and restarted).
    public var cpuSeconds: Int?
    /// Open file descriptors (`RLIMIT_NOFILE`).
    public var openFiles: Int?

    public init() {}

    var isEmpty: Bool { memory == nil && cpuSeconds == nil && openFiles == nil }

    init(json: JSONObject) throws(PluginConfigError.Reason) {
        for (key, value) in json.members {
            let range: ClosedRange<Int64> =
                switch key {
                case "memory": (16 << 20)...(1 << 44)
                case "cpuSeconds": 1...31_536_000
                case "openFiles": 16...1_048_576
                default: throw PluginConfigError.Reason(key, "unknown key limits.\(key); the limits are memory (bytes), cpuSeconds and openFiles")
                }
            guard case .int(let number) = value, range.contains(number) else {
                throw PluginConfigError.Reason(key, "limits.\(key) must be an integer from \(range.lowerBound) to \(range.upperBound)")
            }
            switch key {
            case "memory": memory = Int(number)
            case "cpuSeconds": cpuSeconds = Int(number)
            default: openFiles = Int(number)
            }
        }
    }

    var json: JSONValue {
        var object = JSONObject()
        if let memory { object["memory"] = .int(Int64(memory)) }
        if let cpuSeconds { object["cpuSeconds"] = .int(Int64(cpuSeconds)) }
        if let openFiles { object["openFiles"] = .int(Int64(openFiles)) }
        return .object(object)
    }
}
