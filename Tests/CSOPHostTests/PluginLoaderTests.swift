import CSOPCore
import CSOPHost
import CSOPTestSupport
import Foundation
import Testing

/// The loader against real shared libraries: the Swift diag plugin built by the package,
/// and C plugins compiled here with the system compiler.
@Suite struct PluginLoaderTests {
    let directory: TemporaryDirectory

    init() throws { directory = try TemporaryDirectory("csop-loader") }

    func compile(_ source: String, _ defines: [String] = [], as name: String) throws -> String {
        let output = directory.file(name)
        try CCompiler.buildPlugin(source, defines: defines, output: output)
        return output
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
        let library = try compile("hello.c", as: "libhello.so")
        let host = try await TestEnvironment.makeHost([PluginEntry("10-hello.conf", library: library)], in: directory)
        #expect(host.failures.isEmpty)
        #expect(host.plugins.first?.name == "hello")
        #expect(host.plugins.first?.operations == ["greet", "echo", "fail"])
        let greet = await host.dispatch("hello.greet", ["a": 1])
        #expect(greet.data == ["greeting": "hello from C", "payloadBytes": 7])
        let fail = await host.dispatch("hello.fail", [:], options: RequestOptions(retry: 3))
        #expect(fail.error == CSOPError(ErrorCode("HELLO_FAILED"), "hello.fail always fails"))
        await host.shutdown()
    }

    @Test func aPluginThatBreaksTheContractGetsPluginFaultNotACrash() async throws {
        let library = try compile("broken.c", ["BAD_OUTPUT"], as: "libbadoutput.so")
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
        try CCompiler.buildPlugin("hello.c", output: "\(plugins)/libhello.so")
        let host = await CSOPHost.load(HostConfiguration(pluginsDirectory: plugins, pluginSearchPath: [], searchExecutableDirectory: false))
        #expect(host.failures.isEmpty)
        #expect(host.plugins.first?.library == "\(plugins)/libhello.so")
        await host.shutdown()
    }

    @Test func pluginEventsReachEveryListener() async throws {
        let library = try compile("hello.c", as: "libhello.so")
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
        let hello = try compile("hello.c", as: "libhello.so")
        let noSymbol = try compile("broken.c", ["NO_SYMBOL"], as: "libnosymbol.so")
        let wrongABI = try compile("broken.c", ["WRONG_ABI"], as: "libwrongabi.so")
        let failingInit = try compile("broken.c", ["FAILING_INIT"], as: "libfailinginit.so")
        let writable = try compile("broken.c", ["NAME=\"writable\""], as: "libwritable.so")
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
        check("70-badconfig.conf", .badConfig, "line 3: expected key = value")
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
        let hello = try compile("hello.c", as: "libhello.so")
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
        let first = try compile("broken.c", ["NAME=\"same\""], as: "libsame1.so")
        let second = try compile("broken.c", ["NAME=\"same\""], as: "libsame2.so")
        let host = try await TestEnvironment.makeHost(
            [PluginEntry("20-b.conf", library: second), PluginEntry("10-a.conf", library: first)], in: directory)
        #expect(host.plugins.map(\.library) == [first])
        #expect(host.failures.map { ($0.file as NSString).lastPathComponent } == ["20-b.conf"])
        await host.shutdown()
    }

    @Test func aMissingPluginsDirectoryIsAFailureNotACrash() async {
        let host = await CSOPHost.load(HostConfiguration(pluginsDirectory: directory.file("nope")))
        #expect(host.plugins.isEmpty)
        #expect(host.failures.first?.message.contains("cannot open the plugins directory") == true)
        #expect(await host.dispatch("host.ping").isOK)
        await host.shutdown()
    }
}
