public import CSOPCore
public import CSOPHost
import Foundation

/// Where the built artifacts and test services are.
public enum TestEnvironment {
    /// The directory holding the test bundle, `csop` and the plugin libraries.
    public static let buildDirectory: String = {
        if let dir = ProcessInfo.processInfo.environment["CSOP_BUILD_DIR"] { return dir }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent
    }()

    /// The `csop` executable built with the tests.
    public static var csopExecutable: String { "\(buildDirectory)/csop" }

    /// The path of a built plugin library, e.g. `library("storage")` → `.../libcsop-storage.so`.
    public static func library(_ name: String) -> String { "\(buildDirectory)/libcsop-\(name).so" }

    /// The PostgreSQL server the integration tests use. Tests that need it fail, never
    /// skip, when it is unreachable: `.ci/run` starts it.
    public static var postgresURL: String {
        ProcessInfo.processInfo.environment["CSOP_TEST_POSTGRES_URL"] ?? "postgres://csop:csop@127.0.0.1:5432/csop_test"
    }

    /// Loads a host from a fresh plugins.d holding `entries`.
    public static func makeHost(
        _ entries: [PluginEntry], in directory: TemporaryDirectory, allowInsecurePermissions: Bool = false
    ) async throws -> CSOPHost {
        let plugins = try directory.writePlugins(entries)
        return await CSOPHost.load(
            HostConfiguration(
                pluginsDirectory: plugins, pluginSearchPath: [buildDirectory], searchExecutableDirectory: false,
                allowInsecurePermissions: allowInsecurePermissions))
    }
}

/// One plugins.d file to write.
public struct PluginEntry: Sendable {
    public var fileName: String
    public var library: String
    public var enabled: Bool
    public var config: JSONObject
    /// Extra raw text appended to the file (for malformed-entry tests).
    public var extra: String

    public init(_ fileName: String, library: String, enabled: Bool = true, config: JSONObject = JSONObject(), extra: String = "") {
        self.fileName = fileName
        self.library = library
        self.enabled = enabled
        self.config = config
        self.extra = extra
    }

    /// The plugins.d text of this entry.
    public var text: String { PluginConfigFile.render(library: library, enabled: enabled, config: config) + extra }
}
