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
        #expect(entry.config == ["path": "/tmp/a b.sqlite", "maxLocalSize": 5_242_880, "ratio": 0.5, "compress": false, "bare": 12])
    }

    @Test func renderedEntriesParseBackToTheSameValues() throws {
        let config: JSONObject = [
            "path": "/tmp/a \"b\"\\c\n", "size": 5_242_880, "ratio": 0.25, "on": false, "url": "postgres://u:p@h/db#x",
        ]
        let text = PluginConfigFile.render(library: "lib x.so", enabled: false, config: config)
        let entry = try PluginConfigFile.parse(text, path: "r.conf")
        #expect(entry.library == "lib x.so")
        #expect(entry.enabled == false)
        #expect(entry.config == config)
    }

    @Test func enabledDefaultsToTrueAndCanBeFalse() throws {
        #expect(try PluginConfigFile.parse("library = \"x.so\"", path: "f").enabled)
        #expect(try !PluginConfigFile.parse("library = \"x.so\"\nenabled = false", path: "f").enabled)
    }

    @Test(arguments: [
        ("library = \"x.so\"\nthis is wrong", 2, "expected key = value"),
        ("library = \"x.so\"\nlibrary = \"y.so\"", 2, "duplicate key"),
        ("library = \"x.so\"\ncolour = 1", 2, "unknown key \"colour\""),
        ("library = \"x.so\n", 1, "unterminated string"),
        ("library = \"x.so\"\n[plugins]", 2, "unknown section [plugins]"),
        ("library = \"x.so\"\nenabled = yes", 2, "not a quoted string, number, true or false"),
        ("library = \"x.so\"\nenabled = 1", 2, "enabled must be true or false"),
        ("library = \"x.so\"\n[config]\npath = \"a\" junk", 3, "unexpected text after the string"),
        ("library = \"x.so\"\n[config\n", 2, "section header"),
        ("library = 5", 1, "library must be a non-empty string"),
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

    @Test func missingLibraryNamesTheFile() {
        #expect {
            try PluginConfigFile.parse("# nothing\n[config]\na = 1\n", path: "p.conf")
        } throws: { error in
            (error as? PluginConfigError)?.message.contains("missing required key library") == true
        }
    }
}
