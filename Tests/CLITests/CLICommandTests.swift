import CSOPCore
import CSOPTestSupport
import Foundation
import Testing

/// The CLI as a new user meets it: one-shot commands run as child processes.
@Suite struct CLICommandTests {
    let directory: TemporaryDirectory
    init() throws { directory = try TemporaryDirectory("csop-cli") }

    var csop: String { TestEnvironment.csopExecutable }
    var pluginPath: [String: String?] { ["CSOP_PLUGIN_PATH": TestEnvironment.buildDirectory, "CSOP_PLUGINS_DIR": nil] }

    @Test func versionNamesThePluginABI() async throws {
        let result = try await ChildProcess.run(csop, ["--version"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("plugin ABI 1"))
    }

    @Test func helpShowsEachDefaultOnceAndListsLogLevels() async throws {
        let help = try await ChildProcess.run(csop, ["dispatch", "--help"]).stdout
        #expect(!help.contains("(default {})"))
        #expect(help.components(separatedBy: "(default: {})").count <= 2)
        #expect(!help.contains("5000.0"))
        #expect(help.contains("trace"))
        #expect(help.contains("critical"))
        let bad = try await ChildProcess.run(csop, ["plugins", "--log-level", "loud"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("loud"))
    }

    @Test func auditLogRecordsPluginLoadsAndAnUnusableOneIsRefused() async throws {
        let plugins = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
        let log = directory.file("audit.jsonl")
        let ok = try await ChildProcess.run(csop, ["dispatch", "--plugins-dir", plugins, "--audit-log", log, "diag.noop"], environment: pluginPath)
        #expect(ok.status == 0, "\(ok.stderr)")
        let text = try String(contentsOfFile: log, encoding: .utf8)
        #expect(text.contains(#""event":"plugin.loaded""#) && text.contains(#""plugin":"diag""#), "\(text)")
        let bad = try await ChildProcess.run(
            csop, ["dispatch", "--plugins-dir", plugins, "--audit-log", directory.file("missing/audit.jsonl"), "diag.noop"], environment: pluginPath)
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("cannot open the audit log"), "\(bad.stderr)")
    }

    @Test func jsonLogsAreOneObjectPerLineNamingThePlugin() async throws {
        let plugins = try directory.writePlugins([
            PluginEntry("10-storage.conf", library: "libcsop-storage.so", config: ["path": .string(directory.file("s.sqlite"))])
        ])
        let result = try await ChildProcess.run(
            csop, ["dispatch", "--plugins-dir", plugins, "--log-level", "info", "--log-format", "json", "storage.stats"], environment: pluginPath)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = try result.stderr.split(separator: "\n").map { try JSONValue(parsing: Array($0.utf8)) }
        let storage = try #require(lines.first { $0["plugin"] == "storage" }, "\(result.stderr)")
        #expect(storage["level"] == "info")
        #expect(storage["message"]?.stringValue?.contains("hot tier") == true)
        #expect(storage["time"]?.stringValue?.count == 24)
        #expect(storage["label"] != nil)
        let bad = try await ChildProcess.run(csop, ["plugins", "--log-format", "xml"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("xml"))
    }

    @Test func dispatchReadsThePayloadFromStdinOrAFile() async throws {
        let plugins = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
        let fromStdin = try await ChildProcess.run(
            csop, ["dispatch", "--plugins-dir", plugins, "diag.echo", "-"], environment: pluginPath, input: Array(#"{"from":"stdin"}"#.utf8))
        #expect(fromStdin.status == 0, "\(fromStdin.stderr)")
        #expect(fromStdin.stdout.contains(#""data":{"from":"stdin"}"#))
        let file = directory.file("payload.json")
        try #"{"from":"file"}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let fromFile = try await ChildProcess.run(csop, ["dispatch", "--plugins-dir", plugins, "diag.echo", "@\(file)"], environment: pluginPath)
        #expect(fromFile.stdout.contains(#""data":{"from":"file"}"#))
        let missing = try await ChildProcess.run(csop, ["dispatch", "--plugins-dir", plugins, "diag.echo", "@\(directory.file("none.json"))"], environment: pluginPath)
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("cannot open"))
        let notJSON = try await ChildProcess.run(
            csop, ["dispatch", "--plugins-dir", plugins, "diag.echo", "-"], environment: pluginPath, input: Array("{oops".utf8))
        #expect(notJSON.status == 1)
        #expect(notJSON.stdout.contains("the payload (stdin) is not valid JSON"))
    }

    @Test func checkValidatesWithoutLoadingAndFailsOnAnyProblem() async throws {
        let good = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
        let ok = try await ChildProcess.run(csop, ["check", "--plugins-dir", good], environment: pluginPath)
        #expect(ok.status == 0, "\(ok.stdout)\(ok.stderr)")
        #expect(ok.stdout.contains("ok"))
        let badDirectory = try TemporaryDirectory("csop-cli-bad")
        let bad = try badDirectory.writePlugins([
            PluginEntry("00-diag.conf", library: "libcsop-diag.so", config: ["verbose": true]),
            PluginEntry("10-storage.conf", library: "libcsop-storage.so", config: ["readConnections": 0]),
        ])
        let failed = try await ChildProcess.run(csop, ["check", "--plugins-dir", bad], environment: pluginPath)
        #expect(failed.status == 1)
        #expect(failed.stdout.contains("FAILED"))
        #expect(failed.stdout.contains("verbose"))
        #expect(failed.stdout.contains("config.readConnections"))
        // The repository's own plugins.d checks clean, cold tier and cluster settings included.
        let shipped = try await ChildProcess.run(csop, ["check", "--plugins-dir", "\(CCompiler.packageRoot)/plugins.d"], environment: pluginPath)
        #expect(shipped.status == 0, "\(shipped.stdout)")
    }

    /// The PostgreSQL URLs' TLS options and files are checked by `csop check`, which never
    /// connects (the host does not resolve).
    @Test func checkReportsBadTLSSettingsWithoutConnecting() async throws {
        let missing = directory.file("missing-ca.crt")
        let plugins = try directory.writePlugins(
            [
                PluginEntry(
                    "10-storage.conf", library: "libcsop-storage.so",
                    config: [
                        "path": .string(directory.file("store.sqlite")),
                        "postgresUrl": .string("postgres://u:secret@db.invalid/x?sslmode=verify-full&sslrootcert=\(missing)"),
                    ]),
                PluginEntry("30-sync.conf", library: "libcsop-sync.so", config: ["postgresUrl": "postgres://u:secret@db.invalid/x?sslmode=sometimes"]),
            ], directory: "tls-plugins.d")
        let result = try await ChildProcess.run(csop, ["check", "--plugins-dir", plugins], environment: pluginPath)
        #expect(result.status == 1)
        #expect(result.stdout.contains("sslrootcert \(missing) cannot be read"), "\(result.stdout)")
        #expect(result.stdout.contains("sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full"), "\(result.stdout)")
        #expect(!result.stdout.contains("secret") && !result.stderr.contains("secret"))
    }

    /// Outside the repository, with no plugins.d anywhere: the answer says what is missing and where it looked.
    @Test func aMissingPluginsDirectoryIsReportedWithWhereItLooked() async throws {
        let empty = directory.file("cwd")
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let env: [String: String?] = ["HOME": empty, "XDG_CONFIG_HOME": nil, "CSOP_PLUGINS_DIR": nil]
        let dispatched = try await ChildProcess.run(csop, ["dispatch", "diag.noop"], environment: env, directory: empty)
        #expect(dispatched.status == 1)
        #expect(dispatched.stdout.contains("CAPABILITY_NOT_FOUND"))
        #expect(dispatched.stdout.contains("cannot open the plugins directory"))
        #expect(dispatched.stdout.contains("looked in: ./plugins.d, \(empty)/.config/csop/plugins.d"))
        let listed = try await ChildProcess.run(csop, ["plugins"], environment: env, directory: empty)
        #expect(listed.status == 2)
        #expect(listed.stdout.contains("PLUGINS_DIR_NOT_FOUND"))
    }

    /// The README's embedding example, built as an executable that never imports Foundation,
    /// loads every plugin of plugins.d, asks each capability once and exits on its own.
    @Test func theEmbeddingExampleRunsToTheEnd() async throws {
        let source = try String(contentsOfFile: "\(CCompiler.packageRoot)/examples/embed/main.swift", encoding: .utf8)
        #expect(!source.contains("import Foundation"))
        let readme = try String(contentsOfFile: "\(CCompiler.packageRoot)/README.md", encoding: .utf8)
        #expect(readme.contains(source), "the README's embedding snippet must be examples/embed/main.swift verbatim")
        let result = try await ChildProcess.run(
            "\(TestEnvironment.buildDirectory)/csop-embed-example",
            environment: ["XDG_DATA_HOME": directory.file("data"), "CSOP_PLUGINS_DIR": nil, "CSOP_PLUGIN_PATH": nil],
            directory: CCompiler.packageRoot, timeout: 60)
        #expect(!result.timedOut, "the example hung: \(result.stdout)")
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdoutLines.compactMap { try? JSONValue(parsing: $0) }
        #expect(lines.count == 4, "\(result.stdout)")
        #expect(lines.contains { $0["data"] == ["name": "Ada"] })
        #expect(lines.contains { $0["data"]?["result"] == "2880067194370816120" })
        #expect(lines.contains { $0["status"] == "ok" && $0["data"] == .null })
        #expect(lines.contains { $0["event"] == "hello" && $0["data"] == ["text": "hi"] })
    }
}

/// `csop bench --html FILE`: the table as one page with a chart per row (a quick debug run of
/// the host suite: the figures do not matter here, the page does).
@Suite struct BenchHTMLTests {
    @Test func benchWritesAnHTMLPageWithAChartPerRow() async throws {
        let directory = try TemporaryDirectory("csop-bench-html")
        let page = directory.file("bench.html")
        let result = try await ChildProcess.run(
            TestEnvironment.csopExecutable, ["bench", "--quick", "--only", "host", "--html", page], timeout: 600)
        #expect(result.status == 0, "\(result.stderr.suffix(2000))")
        let html = try String(contentsOfFile: page, encoding: .utf8)
        #expect(html.hasPrefix("<!doctype html>"))
        let rows = result.stdout.split(separator: "\n").filter { $0.hasPrefix("host | ") }
        #expect(rows.count >= 5)
        // One chart per row, each with the row's bar and its baseline's.
        #expect(html.components(separatedBy: "<svg").count - 1 == rows.count, "\(rows.count) rows")
        #expect(html.contains("no-op dispatch with metrics on (callback)"))
        #expect(html.contains("metrics off (callback): "))
        #expect(!html.contains("<script"), "the page must need no script")
        #expect(!html.contains("http://") && !html.contains("https://"), "the page must need no outside assets")

        let refused = try await ChildProcess.run(
            TestEnvironment.csopExecutable, ["bench", "--quick", "--only", "host", "--html", directory.file("missing/dir/b.html")])
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("cannot write --html"), "\(refused.stderr)")
    }
}
