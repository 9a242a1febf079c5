import CSOPCore
import CSOPHost
import Testing

@Suite struct PluginConfigFileTests {
    @Test func parsesTopLevelKeysAndConfig() throws {
        let text = """
            # storage, embedded
            library = "libcsop-storage.so"   # the plugin
            enabled = true
            name = 'storage'

            [config]
            path = "/tmp/a b.sqlite"
            maxLocalSize = 5_242_880
            ratio = 0.5
            compress = false
            bare = 12 # trailing comment
            """
        let entry = try PluginConfigFile.parse(text, path: "10-storage.conf")
        #expect(entry.library == "libcsop-storage.so")
        #expect(entry.enabled)
        #expect(entry.expectedName == "storage")
        #expect(entry.config.unordered == ["path": "/tmp/a b.sqlite", "maxLocalSize": 5_242_880, "ratio": 0.5, "compress": false, "bare": 12])
    }

    @Test func renderedEntriesParseBackToTheSameValues() throws {
        let config: JSONObject = [
            "path": "/tmp/a \"b\"\\c\n\u{1}", "size": 5_242_880, "ratio": 0.25, "whole": 2.0, "on": false,
            "url": "postgres://u:p@h/db#x", "list": [1, "two", ["three": 3.5]], "odd key": "é",
        ]
        let text = PluginConfigFile.render(library: "lib x.so", enabled: false, config: config)
        let entry = try PluginConfigFile.parse(text, path: "r.conf")
        #expect(entry.library == "lib x.so")
        #expect(entry.enabled == false)
        #expect(entry.config.unordered == config.unordered)
    }

    @Test func enabledDefaultsToTrueAndCanBeFalse() throws {
        #expect(try PluginConfigFile.parse("library = \"x.so\"", path: "f").enabled)
        #expect(try !PluginConfigFile.parse("library = \"x.so\"\nenabled = false", path: "f").enabled)
    }

    @Test(arguments: [
        ("library = \"x.so\"\nthis is wrong", 2, "expected '='"),
        ("library = \"x.so\"\nlibrary = \"y.so\"", 2, "cannot redefine existing string 'library'"),
        ("library = \"x.so\"\ncolour = 1", 2, "unknown key \"colour\""),
        ("library = \"x.so\n", 1, "Error while parsing string"),
        ("library = \"x.so\"\n[plugins]", 2, "unknown section [plugins]"),
        ("library = \"x.so\"\nenabled = yes", 2, "could not determine value type"),
        ("library = \"x.so\"\nenabled = 1", 2, "enabled must be true or false"),
        ("library = \"x.so\"\n[config]\npath = \"a\" junk", 3, "Error while parsing"),
        ("library = \"x.so\"\n[config\n", 2, "table header"),
        ("library = 5", 1, "library must be a non-empty string"),
        ("library = \"x.so\"\n[config]\nworkers = _2", 3, "underscores"),
        ("library = \"x.so\"\n[config]\nworkers = 1__0", 3, "underscores"),
        ("library = \"x.so\"\n[config]\nlimit = inf", 3, "config.limit is inf"),
        ("library = \"x.so\"\n[config]\nwhen = 1979-05-27", 3, "config.when is a TOML date"),
        ("library = \"x.so\"\nconfig = 3", 2, "config must be a table"),
    ])
    func reportsFileAndLine(_ text: String, _ line: Int, _ message: String) {
        #expect {
            try PluginConfigFile.parse(text, path: "plugins.d/20-x.conf")
        } throws: { error in
            guard let error = error as? PluginConfigError else { return false }
            return error.file == "plugins.d/20-x.conf" && error.line == line && error.message.contains(message)
                && error.description.hasPrefix("plugins.d/20-x.conf:\(line): ")
        }
    }

    /// The fuzzer's find: toml++ (inside TOMLKit) asserts — SIGABRT in a debug build — on a
    /// table header whose first key character cannot start a key. Such headers are refused
    /// before TOMLKit sees them, naming the line and what to write instead.
    @Test(arguments: [
        ("library = \"x.so\"\n[=]", 2, "found '='"), ("library = \"x.so\"\n[.a]", 2, "found '.'"),
        ("library = \"x.so\"\n\n[ é ]\nk = 1", 3, "found a non-ASCII character: quote such a key"),
        ("library = \"x.so\"\n[[ + ]]", 2, "found '+'"), ("library = \"x.so\"\n[\n", 2, "found the end of the line"),
        ("library = \"x.so\"\r\n  [\r\n", 2, "found the end of the line"), ("[=]\nlibrary = \"x.so\"", 1, "found '='"),
        ("\u{FEFF}[{]", 1, "found '{'"), ("library = \"x.so\" # [=]\n\t[\t=]", 2, "found '='"),
        ("a = [\n  1,\n]\n[#]", 4, "found '#'"), ("a = \"\"\"\n[\"\"\"\"\"\n[=]", 3, "found '='"),
    ])
    func tableHeadersThatTOMLKitWouldAbortOnAreConfigErrors(_ text: String, _ line: Int, _ message: String) {
        expectConfigError(text, line: line, saying: "a table header must start with a key", message)
    }

    /// Found while fuzzing the fix above: toml++ also asserts when a value starts as a date
    /// and its `T` is not followed by a digit (it picks the type from the characters the value
    /// holds, then expects a time).
    @Test(arguments: [
        ("library = \"x.so\"\n[config]\nwhen = 1978-05-23Tq7:3br00Z", 3), ("library = \"x.so\"\n[config]\nwhen = 1978-05-23T_7:30:00Z", 3),
        ("library = \"x.so\"\n[config]\nwhen = [\n  1,\n  1978-05-23t 07:30:00,\n]", 5), ("library = \"x.so\"\n[config]\nwhen = { a = 1978-05-23T:07:30 }", 3),
        ("library = \"x.so\"\n[config]\nwhen=1978-05-23Tz", 3),
    ])
    func datesWithoutATimeAfterTheirTAreConfigErrors(_ text: String, _ line: Int) {
        expectConfigError(text, line: line, saying: "a value that starts as a date must go on with a time after its T")
    }

    /// Found by CI's fuzzing: toml++ reads a date and a space as the start of a date-time,
    /// and asserts when one digit and the end of the value follow.
    @Test(arguments: [
        ("library = \"x.so\"\n[config]\nwhen = 1979-05-2= 7 1979-05-27>07:32:00Z", 3), ("library = \"x.so\"\n[config]\nwhen = 1979-05-27 7\n", 3),
        ("library = \"x.so\"\n[config]\nlist = [\n  1979-05-27 7,\n]", 4), ("library = \"x.so\"\n[config]\nt = { a = 1979_-05-27 7}", 3),
    ])
    func datesThenASpaceAndOneDigitAreConfigErrors(_ text: String, _ line: Int) {
        expectConfigError(text, line: line, saying: "a date followed by a space must go on with a whole time")
    }

    /// Valid dates and date-times with a space reach TOMLKit, which reads them (plugins.d
    /// then asks for a quoted string: the guard is not what refuses them).
    @Test(arguments: ["day = 1979-05-27", "at = 1979-05-27 07:32:00", "noted = 1979-05-27 # a comment", "list = [1979-05-27, 1979-05-27 07:32:00Z]"])
    func datesAndDateTimesWithASpaceStillParse(_ line: String) {
        #expect {
            try PluginConfigFile.parse("library = \"x.so\"\n[config]\n\(line)", path: "plugins.d/20-x.conf")
        } throws: { error in
            guard let error = error as? PluginConfigError else { return false }
            return error.message.contains("is a TOML date") && !error.message.contains("must go on")
        }
    }

    /// Found while fuzzing too: toml++ asserts when an array element starts with `}` or a
    /// Unicode line separator (parse_value expects no value terminator there).
    @Test(arguments: [
        ("library = \"x.so\"\n[config]\nempty = [}", 3, "'}'"), ("library = \"x.so\"\n[config]\nlist = [\n  1,\n  } ]", 5, "'}'"),
        ("library = \"x.so\"\n[config]\nlist = [\u{2028}1]", 3, "line separator"),
        ("library = \"x.so\"\n[config]\nlist = [1, # c\n\u{85}]", 4, "line separator"),
        ("library = \"x.so\"\n[config]\nlist = [[1], \u{2029}]", 3, "line separator"),
    ])
    func arrayElementsStartingWithAValueTerminatorAreConfigErrors(_ text: String, _ line: Int, _ message: String) {
        expectConfigError(text, line: line, saying: "an array holds", message)
    }

    /// A `[` that is not at the start of a statement is no table header, whatever follows it,
    /// and a key may look like a date: the guard never refuses valid TOML.
    @Test func bracketsInsideValuesAreNotTableHeaders() throws {
        let text = #"""
            library = "x.so"
            [config]
            nested = [
              [+1, 2],
              [{ a = 1 }],
              [ ],
            ] # [=]
            text = """
            [=]
              [é]
            """
            literal = '''
            [.a]'''
            quoted = "[=" # "
            escaped = "\\" # [=]
            continued = """a \
              [=] b"""
            ["config"."quoted key"]
            x = 1
            [ 'config' . 'literal.key' ]
            y = 2
            [config.dates]
            1978-05-23Tq = 3
            inline = { a = 1, 1978-05-23Tq = 4 }
            tables = [{ a = [] }, {}]
            text = ["}", "\u2028"]
            """#
        let entry = try PluginConfigFile.parse(text, path: "f")
        #expect(entry.config["nested"] == [[1, 2], [["a": 1]], []])
        #expect(entry.config["text"] == "[=]\n  [é]\n")
        #expect(entry.config["literal"] == "[.a]")
        #expect(entry.config["continued"] == "a [=] b")
        #expect(entry.config["quoted key"] == ["x": 1])
        #expect(entry.config["literal.key"] == ["y": 2])
        #expect(entry.config["dates"]?["1978-05-23Tq"] == 3)
        #expect(entry.config["dates"]?["inline"]?["1978-05-23Tq"] == 4)
        #expect(entry.config["dates"]?["tables"] == [["a": []], [:]])
        #expect(entry.config["dates"]?["text"] == ["}", "\u{2028}"])
    }

    /// With CRLF line endings an error kept its line: "\r\n" is one Character, and the line
    /// lookup split Characters on "\n".
    @Test func crlfLineEndingsKeepTheErrorLine() {
        #expect {
            try PluginConfigFile.parse("library = \"x.so\"\r\nenabled = true\r\ncolour = 1\r\n", path: "f")
        } throws: { error in
            (error as? PluginConfigError)?.line == 3
        }
    }

    /// TOML as users know it: arrays, nested and inline tables, every integer form TOML allows.
    @Test func acceptsTOMLArraysNestedTablesAndIntegerForms() throws {
        let text = """
            library = "x.so"
            [config]
            tags = ["hot", "local"]
            hex = 0x10
            plus = +2
            grouped = 1_000
            point = { x = 1, y = 2.5 }
            [config.limits]
            keys = 10_000
            nested = [[1, 2], [3]]
            """
        let entry = try PluginConfigFile.parse(text, path: "t.conf")
        #expect(entry.config["tags"] == ["hot", "local"])
        #expect(entry.config["hex"] == 16)
        #expect(entry.config["plus"] == 2)
        #expect(entry.config["grouped"] == 1000)
        #expect(entry.config["point"] == ["x": 1, "y": 2.5])
        #expect(entry.config["limits"] == ["keys": 10_000, "nested": [[1, 2], [3]]])
        let rendered = PluginConfigFile.render(library: "x.so", config: entry.config)
        #expect(try PluginConfigFile.parse(rendered, path: "r.conf").config.unordered == entry.config.unordered)
    }

    @Test func missingLibraryNamesTheFile() {
        #expect {
            try PluginConfigFile.parse("# nothing\n[config]\na = 1\n", path: "p.conf")
        } throws: { error in
            (error as? PluginConfigError)?.message.contains("missing required key library") == true
        }
    }
}

extension JSONObject {
    /// The members by key: TOML tables do not keep their keys' order.
    var unordered: [String: JSONValue] { Dictionary(members.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 }) }
}

/// Expects `text` to be refused with a ``PluginConfigError`` at `line` whose message holds
/// every one of `phrases`.
private func expectConfigError(_ text: String, line: Int, saying phrases: String..., sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(sourceLocation: sourceLocation) {
        try PluginConfigFile.parse(text, path: "plugins.d/20-x.conf")
    } throws: { error in
        guard let error = error as? PluginConfigError else { return false }
        return error.line == line && phrases.allSatisfy { error.message.contains($0) }
    }
}
