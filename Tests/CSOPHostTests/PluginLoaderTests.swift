import CSOPCore
@testable import CSOPHost
import CSOPTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The loader against real shared libraries: the Swift diag plugin built by the package,
/// and C plugins compiled here with the system compiler.
@Suite struct PluginLoaderTests {
    let directory: TemporaryDirectory

    init() throws { directory = try TemporaryDirectory("csop-loader") }

    func compile(_ source: String, _ defines: [String] = [], as name: String) async throws -> String {
        let output = directory.file(name)
        try await CCompiler.buildPlugin(source, defines: defines, output: output)
        return output
    }

    /// A host of one entry whose log goes to `log`.
    func loggedHost(_ entry: PluginEntry, log: LogCapture) async throws -> CSOPHost {
        let plugins = try directory.writePlugins([entry])
        return await CSOPHost.load(
            HostConfiguration(
                pluginsDirectory: plugins, pluginSearchPath: [], searchExecutableDirectory: false,
                logger: Logger(label: "test") { _ in log }))
    }

    @Test func loadsTheSwiftPluginBuiltByThePackage() async throws {
        let host = try await TestEnvironment.makeHost([PluginEntry("00-diag.conf", library: "libcsop-diag.so")], in: directory)
        #expect(host.failures.isEmpty)
        #expect(host.plugins.map(\.name) == ["diag"])
        #expect(host.plugins.first?.operations.contains("noop") == true)
        let response = await host.dispatch("diag.echo", ["x": [1, "two"]])
        #expect(response.data == ["x": [1, "two"]])
        await host.shutdown()
    }

    @Test func loadsAPluginWrittenInPlainC() async throws {
        let library = try await compile("hello.c", as: "libhello.so")
        let host = try await TestEnvironment.makeHost([PluginEntry("10-hello.conf", library: library)], in: directory)
        #expect(host.failures.isEmpty)
        #expect(host.plugins.first?.name == "hello")
        #expect(host.plugins.first?.operations == ["greet", "echo", "fail", "commit", "whoami", "trace"])
        let greet = await host.dispatch("hello.greet", ["a": 1])
        #expect(greet.data == ["greeting": "hello from C", "payloadBytes": 7])
        let fail = await host.dispatch("hello.fail", [:], options: RequestOptions(retry: 3))
        #expect(fail.error == CSOPError(ErrorCode("HELLO_FAILED"), "hello.fail always fails"))
        // begin_commit through the C ABI: the call is still wanted.
        #expect(await host.dispatch("hello.commit").data == ["committed": 1])
        // The caller fields through the C ABI (CSOP_CALL_HAS_CALLER); none for the owner.
        let caller = Caller(subject: "alice", tenant: "acme", actions: try ActionPatterns(parsing: "hello.*,sync.get"))
        #expect(await host.dispatch("hello.whoami", caller: caller).data == ["tenant": "acme", "subject": "alice", "actions": "hello.*,sync.get"])
        #expect(await host.dispatch("hello.whoami").data == ["owner": true])
        await host.shutdown()
    }

    @Test func aPluginThatBreaksTheContractGetsPluginFaultNotACrash() async throws {
        let library = try await compile("broken.c", ["BAD_OUTPUT"], as: "libbadoutput.so")
        let host = try await TestEnvironment.makeHost([PluginEntry("10-bad.conf", library: library)], in: directory)
        let invalid = await host.dispatch("broken.ping")
        #expect(invalid.error?.code == .pluginFault)
        #expect(invalid.error?.message.contains("returned invalid JSON") == true)
        let status = await host.dispatch("broken.status")
        #expect(status.error?.code == .pluginFault)
        #expect(status.error?.message.contains("unknown status 42") == true)
        await host.shutdown()
    }

    @Test func relativeLibraryIsFoundNextToTheConfigFile() async throws {
        let plugins = try directory.writePlugins([PluginEntry("10-hello.conf", library: "libhello.so")])
        try await CCompiler.buildPlugin("hello.c", output: "\(plugins)/libhello.so")
        let host = await CSOPHost.load(HostConfiguration(pluginsDirectory: plugins, pluginSearchPath: [], searchExecutableDirectory: false))
        #expect(host.failures.isEmpty)
        #expect(host.plugins.first?.library == "\(plugins)/libhello.so")
        await host.shutdown()
    }

    @Test func pluginEventsReachEveryListener() async throws {
        let library = try await compile("hello.c", as: "libhello.so")
        let host = try await TestEnvironment.makeHost([PluginEntry("10-hello.conf", library: library)], in: directory)
        let stream = host.events()
        _ = await host.dispatch("hello.echo", ["n": 1])
        var iterator = stream.makeAsyncIterator()
        let event = await iterator.next()
        #expect(event?.plugin == "hello")
        #expect(event?.value == ["type": "hello.echoed"])
        await host.shutdown()
    }

    /// Every broken entry is reported against its own file, and the good ones still serve.
    @Test func brokenEntriesFailAloneAndTheRestServe() async throws {
        let hello = try await compile("hello.c", as: "libhello.so")
        let noSymbol = try await compile("broken.c", ["NO_SYMBOL"], as: "libnosymbol.so")
        let wrongABI = try await compile("broken.c", ["WRONG_ABI"], as: "libwrongabi.so")
        let failingInit = try await compile("broken.c", ["FAILING_INIT"], as: "libfailinginit.so")
        let writable = try await compile("broken.c", ["NAME=\"writable\""], as: "libwritable.so")
        chmod(writable, 0o777)
        let entries = [
            PluginEntry("00-diag.conf", library: "libcsop-diag.so"),
            PluginEntry("10-hello.conf", library: hello),
            PluginEntry("20-missing.conf", library: "libdoes-not-exist.so"),
            PluginEntry("30-nosymbol.conf", library: noSymbol),
            PluginEntry("40-wrongabi.conf", library: wrongABI),
            PluginEntry("50-failinginit.conf", library: failingInit),
            PluginEntry("60-duplicate.conf", library: "libcsop-diag.so"),
            PluginEntry("70-badconfig.conf", library: hello, extra: "oops no equals\n"),
            PluginEntry("80-writable-lib.conf", library: writable),
            PluginEntry("90-worldwritable.conf", library: hello),
            PluginEntry("95-disabled.conf", library: "libdoes-not-exist.so", enabled: false),
        ]
        let plugins = try directory.writePlugins(entries)
        chmod("\(plugins)/90-worldwritable.conf", 0o666)
        let host = await CSOPHost.load(
            HostConfiguration(pluginsDirectory: plugins, pluginSearchPath: [TestEnvironment.buildDirectory], searchExecutableDirectory: false))

        #expect(host.plugins.map(\.name) == ["diag", "hello"])
        let failures = Dictionary(uniqueKeysWithValues: host.failures.map { (($0.file as NSString).lastPathComponent, $0) })
        #expect(failures.count == 8)
        func check(_ file: String, _ kind: PluginLoadFailure.Kind, _ text: String) {
            #expect(failures[file]?.kind == kind, "\(file): \(String(describing: failures[file]))")
            #expect(failures[file]?.message.contains(text) == true, "\(file): \(failures[file]?.message ?? "no failure")")
        }
        check("20-missing.conf", .libraryNotFound, "libdoes-not-exist.so not found")
        check("30-nosymbol.conf", .missingSymbol, "does not export csop_plugin_register")
        check("40-wrongabi.conf", .abiMismatch, "plugin ABI version 99, host ABI version 1")
        check("50-failinginit.conf", .initFailed, "cannot open /nonexistent/db")
        check("60-duplicate.conf", .duplicateDomain, "already served by the plugin from \(plugins)/00-diag.conf")
        check("70-badconfig.conf", .badConfig, "line 3: Error while parsing key-value pair")
        check("80-writable-lib.conf", .insecurePermissions, "writable by everyone")
        check("90-worldwritable.conf", .insecurePermissions, "refusing the config file")

        #expect(await host.dispatch("diag.noop").isOK)
        #expect(await host.dispatch("hello.greet").isOK)
        #expect(await host.dispatch("broken.ping").error?.code == .capabilityNotFound)
        let info = await host.info()
        #expect(info["failures"]?.arrayValue?.count == 8)
        await host.shutdown()
    }

    @Test func insecureFilesLoadWithTheExplicitOverride() async throws {
        let hello = try await compile("hello.c", as: "libhello.so")
        chmod(hello, 0o777)
        let plugins = try directory.writePlugins([PluginEntry("10-hello.conf", library: hello)])
        chmod("\(plugins)/10-hello.conf", 0o666)
        let host = await CSOPHost.load(
            HostConfiguration(pluginsDirectory: plugins, pluginSearchPath: [], searchExecutableDirectory: false, allowInsecurePermissions: true))
        #expect(host.failures.isEmpty)
        #expect(host.plugins.map(\.name) == ["hello"])
        await host.shutdown()
    }

    @Test func loadsEntriesInNameOrderSoTheFirstClaimWins() async throws {
        let first = try await compile("broken.c", ["NAME=\"same\""], as: "libsame1.so")
        let second = try await compile("broken.c", ["NAME=\"same\""], as: "libsame2.so")
        let host = try await TestEnvironment.makeHost(
            [PluginEntry("20-b.conf", library: second), PluginEntry("10-a.conf", library: first)], in: directory)
        #expect(host.plugins.map(\.library) == [first])
        #expect(host.failures.map { ($0.file as NSString).lastPathComponent } == ["20-b.conf"])
        await host.shutdown()
    }

    @Test func aMissingPluginsDirectoryIsItsOwnFailureKind() async {
        let host = await CSOPHost.load(HostConfiguration(pluginsDirectory: directory.file("nope")))
        #expect(host.plugins.isEmpty)
        #expect(host.failures.count == 1)
        #expect(host.failures.first?.kind == .pluginsDirectoryNotFound)
        #expect(host.failures.first?.message.contains("cannot open the plugins directory") == true)
        #expect(await host.dispatch("host.ping").isOK)
        let missing = await host.dispatch("diag.noop")
        #expect(missing.error?.code == .capabilityNotFound)
        #expect(missing.error?.message.contains("no plugins were loaded: cannot open the plugins directory") == true)
        await host.shutdown()
    }

    @Test func capabilityNotFoundSaysWhyTheEntryFailed() async throws {
        let writable = try await compile("broken.c", ["NAME=\"weather\""], as: "libcsop-weather.so")
        chmod(writable, 0o775)
        let host = try await TestEnvironment.makeHost(
            [
                PluginEntry("10-weather.conf", library: writable),
                PluginEntry("20-storage.conf", library: "libcsop-storage-missing.so", extra: "name = \"storage\"\n"),
            ], in: directory)
        let weather = await host.dispatch("weather.ping")
        #expect(weather.error?.code == .capabilityNotFound)
        #expect(weather.error?.message.contains("its plugins.d entry") == true)
        #expect(weather.error?.message.contains("INSECURE_PERMISSIONS") == true)
        #expect(weather.error?.message.contains("writable by its group") == true)
        let storage = await host.dispatch("storage.get", ["key": "k"])
        #expect(storage.error?.message.contains("20-storage.conf failed to load: LIBRARY_NOT_FOUND") == true)
        let other = await host.dispatch("nothing.here")
        #expect(other.error?.message.contains("failed to load") == false)
        await host.shutdown()
    }

    @Test func aCompletionWithATooSmallOutcomeIsAPluginFault() async throws {
        let library = try await compile("broken.c", ["SMALL_OUTCOME"], as: "libsmall.so")
        let host = try await TestEnvironment.makeHost([PluginEntry("10-small.conf", library: library)], in: directory)
        let response = await host.dispatch("broken.ping")
        #expect(response.error?.code == .pluginFault)
        #expect(response.error?.message.contains("struct_size 8") == true)
        await host.shutdown()
    }

    /// A plugin that never completes a call: the caller gets TIMEOUT, host.info counts it, and
    /// shutdown waits only its grace period, then names the plugin and the call in the log.
    @Test func aCallNeverCompletedIsCountedAndDoesNotHoldShutdown() async throws {
        let library = try await compile("broken.c", ["NEVER_COMPLETE"], as: "libnever.so")
        let log = LogCapture()
        let host = try await loggedHost(PluginEntry("10-never.conf", library: library), log: log)
        let response = await host.dispatch("broken.status", options: RequestOptions(timeout: 50))
        #expect(response.error?.code == .timeout)
        #expect(await host.dispatch("broken.ping").data == "pong")
        let plugin = try #require(await host.info()["capabilities"]?.arrayValue?.first { $0["name"] == "broken" })
        #expect(plugin["neverCompleted"] == 1)
        #expect(plugin["running"] == 1)
        await host.shutdown(gracePeriod: 200)
        let warning = log.messages.first { $0.contains("plugin broken still has 1 calls running") }
        #expect(warning?.contains("timed out and never completed: call") == true, "\(log.messages)")
    }

    /// A plugin that completes a call twice: the first outcome stands, the second is a logged
    /// PLUGIN_FAULT that changes nothing (it used to corrupt the host).
    @Test func aSecondCompletionIsALoggedFaultThatChangesNothing() async throws {
        let library = try await compile("broken.c", ["DOUBLE_COMPLETE"], as: "libdouble.so")
        let log = LogCapture()
        let host = try await loggedHost(PluginEntry("10-double.conf", library: library), log: log)
        for _ in 0..<200 {
            #expect(await host.dispatch("broken.ping").data == "pong")
        }
        let faults = log.messages.filter { $0.contains("PLUGIN_FAULT: plugin broken completed call") }
        #expect(faults.count == 200)
        #expect(faults.first?.contains("the second completion was ignored") == true)
        await host.shutdown()
    }

    @Test func aDescriptorFromBeforeCheckConfigStillLoadsAndChecks() async throws {
        let library = try await compile("broken.c", ["OLD_DESCRIPTOR"], as: "libold.so")
        let host = try await TestEnvironment.makeHost([PluginEntry("10-old.conf", library: library)], in: directory)
        #expect(host.failures.isEmpty, "\(host.failures)")
        #expect(await host.dispatch("broken.ping").data == "pong")
        await host.shutdown()
        let plugins = try directory.writePlugins([PluginEntry("10-old.conf", library: library, config: ["port": 1])])
        let results = PluginCheck.run(HostConfiguration(pluginsDirectory: plugins, pluginSearchPath: [], searchExecutableDirectory: false))
        #expect(results.map(\.status.isOK) == [true])
    }

    /// `csop check`: every problem the loader finds, without creating any plugin.
    @Test func checkReportsEachEntryWithoutCreatingPlugins() async throws {
        let failingInit = try await compile("broken.c", ["FAILING_INIT"], as: "libfailinginit.so")
        let refusing = try await compile("broken.c", ["REFUSE_CONFIG", "NAME=\"picky\""], as: "libpicky.so")
        let plugins = try directory.writePlugins([
            PluginEntry("00-diag.conf", library: "libcsop-diag.so"),
            PluginEntry("10-diag-config.conf", library: "libcsop-diag.so", config: ["verbose": true]),
            PluginEntry("20-init.conf", library: failingInit),
            PluginEntry("30-picky.conf", library: refusing, config: ["port": 1]),
            PluginEntry("40-picky.conf", library: refusing),
            PluginEntry("50-missing.conf", library: "libdoes-not-exist.so"),
            PluginEntry("60-off.conf", library: "libdoes-not-exist.so", enabled: false),
        ])
        let results = PluginCheck.run(
            HostConfiguration(pluginsDirectory: plugins, pluginSearchPath: [TestEnvironment.buildDirectory], searchExecutableDirectory: false))
        let byFile = Dictionary(uniqueKeysWithValues: results.map { (($0.file as NSString).lastPathComponent, $0.status) })
        #expect(byFile["00-diag.conf"]?.isOK == true)
        #expect(byFile["10-diag-config.conf"]?.failure?.kind == .badConfig)
        #expect(byFile["10-diag-config.conf"]?.failure?.message.contains("verbose") == true)
        // create() would fail, but check never calls it.
        #expect(byFile["20-init.conf"]?.isOK == true)
        #expect(byFile["30-picky.conf"]?.failure?.message.contains("config.port is not supported") == true)
        // The first picky entry failed its check, so the second one is the domain's first claim.
        #expect(byFile["40-picky.conf"]?.isOK == true)
        #expect(byFile["50-missing.conf"]?.failure?.kind == .libraryNotFound)
        #expect(byFile["60-off.conf"] == .disabled)
        let missing = PluginCheck.run(HostConfiguration(pluginsDirectory: directory.file("nope")))
        #expect(missing.first?.status.failure?.kind == .pluginsDirectoryNotFound)
    }

    /// Only regular files are read, without blocking: odd directory entries are clear failures.
    @Test func oddEntriesAreReportedForWhatTheyAreAndNeverBlock() async throws {
        let plugins = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
        #expect(mkfifo("\(plugins)/10-fifo.conf", 0o644) == 0)
        #expect(symlink("\(plugins)/missing-target", "\(plugins)/20-dangling.conf") == 0)
        #expect(symlink("\(plugins)/30-loop.conf", "\(plugins)/30-loop.conf") == 0)
        try FileManager.default.createDirectory(atPath: "\(plugins)/40-directory.conf", withIntermediateDirectories: false)
        try String(repeating: "# padding\n", count: 200_000).write(toFile: "\(plugins)/50-huge.conf", atomically: true, encoding: .utf8)
        #expect(symlink("\(plugins)/00-diag.conf", "\(plugins)/60-linked.conf") == 0)
        let host = await CSOPHost.load(
            HostConfiguration(pluginsDirectory: plugins, pluginSearchPath: [TestEnvironment.buildDirectory], searchExecutableDirectory: false))
        let failures = Dictionary(uniqueKeysWithValues: host.failures.map { (($0.file as NSString).lastPathComponent, $0) })
        #expect(failures["10-fifo.conf"]?.kind == .badConfig)
        #expect(failures["10-fifo.conf"]?.message.contains("FIFO") == true)
        #expect(failures["20-dangling.conf"]?.message.contains("dangling symbolic link") == true)
        #expect(failures["30-loop.conf"]?.message.contains("loops") == true)
        #expect(failures["40-directory.conf"]?.message.contains("is a directory") == true)
        #expect(failures["50-huge.conf"]?.message.contains("larger than") == true)
        // A symlink to a good entry is a good entry: it claims diag a second time.
        #expect(failures["60-linked.conf"]?.kind == .duplicateDomain)
        #expect(host.plugins.map(\.name) == ["diag"])
        await host.shutdown()
    }

    /// StrictModes checks the directories too: a library others could replace is refused.
    @Test func aLibraryInADirectoryOthersCanWriteIsRefused() async throws {
        let shared = directory.file("shared")
        try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
        try await CCompiler.buildPlugin("hello.c", output: "\(shared)/libhello.so")
        chmod(shared, 0o777)
        let host = try await TestEnvironment.makeHost([PluginEntry("10-hello.conf", library: "\(shared)/libhello.so")], in: directory)
        #expect(host.failures.first?.kind == .insecurePermissions)
        #expect(host.failures.first?.message.contains("its directory \(shared) is writable by everyone") == true)
        await host.shutdown()
        chmod(shared, 0o1777)  // Sticky, like /tmp: others cannot replace what we own.
        let sticky = try await TestEnvironment.makeHost([PluginEntry("10-hello.conf", library: "\(shared)/libhello.so")], in: directory)
        #expect(sticky.failures.isEmpty, "\(sticky.failures)")
        await sticky.shutdown()
    }

    @Test func findsThePluginsDirectoryInTheDocumentedOrder() throws {
        let home = directory.file("home")
        let xdg = directory.file("xdg")
        try FileManager.default.createDirectory(atPath: "\(xdg)/csop/plugins.d", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(home)/.config/csop/plugins.d", withIntermediateDirectories: true)
        func find(_ env: [String: String]) -> (String, [String]) {
            // Ignores the repository's own ./plugins.d (the tests' working directory).
            let found = HostConfiguration.findPluginsDirectory(
                environment: { env[$0] }, isDirectory: { $0 != "./plugins.d" && HostConfiguration.isDirectory($0) })
            return (found.directory, found.searched)
        }
        #expect(find(["CSOP_PLUGINS_DIR": "/srv/csop"]).0 == "/srv/csop")
        #expect(find(["XDG_CONFIG_HOME": xdg, "HOME": home]).0 == "\(xdg)/csop/plugins.d")
        #expect(find(["HOME": home]).0 == "\(home)/.config/csop/plugins.d")
        let nothing = find(["HOME": directory.file("empty")])
        #expect(nothing.0 == "./plugins.d")
        #expect(nothing.1.first == "./plugins.d")
        #expect(nothing.1.last?.hasSuffix("/etc/csop/plugins.d") == true)
    }
}

extension PluginCheck.Status {
    var isOK: Bool { if case .ok = self { true } else { false } }
    var failure: PluginLoadFailure? { if case .failed(let failure) = self { failure } else { nil } }
}

/// Collects log messages for assertions.
final class LogCapture: LogHandler, Sendable {
    private let lines = Mutex<[String]>([])
    private let tagged = Mutex<[(message: String, metadata: Logger.Metadata)]>([])
    var messages: [String] { lines.withLock { $0 } }
    /// Each message with the metadata given where it was logged (not the logger's own).
    var entries: [(message: String, metadata: Logger.Metadata)] { tagged.withLock { $0 } }

    var logLevel: Logger.Level {
        get { .trace }
        set {}
    }
    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }

    func log(event: LogEvent) {
        lines.withLock { $0.append("\(event.message)") }
        tagged.withLock { $0.append(("\(event.message)", event.metadata ?? [:])) }
    }
}
