public import CSOPCore
public import CSOPHost
import CSOPPostgres
import Foundation
import Logging
import PostgresNIO

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

    /// ``postgresURL`` with its host replaced (the port, user and database kept) and `query`
    /// appended, e.g. `postgresURL(host: "localhost", query: "sslmode=verify-full&sslrootcert=…")`.
    public static func postgresURL(host: String? = nil, query: String) -> String {
        var url = Substring(postgresURL)
        if let host, let at = url.lastIndex(of: "@") {
            let rest = url[url.index(after: at)...]
            let end = rest.firstIndex(where: { $0 == ":" || $0 == "/" || $0 == "?" }) ?? rest.endIndex
            url = url[...at] + host + rest[end...]
        }
        return query.isEmpty ? String(url) : "\(url)\(url.contains("?") ? "&" : "?")\(query)"
    }

    /// The directory of the test PKI that `scripts/install-deps.sh` generates and the test
    /// server uses (`CSOP_TEST_TLS_DIR`).
    public static var postgresTLSDirectory: String {
        ProcessInfo.processInfo.environment["CSOP_TEST_TLS_DIR"] ?? "/var/lib/postgresql/csop-test-tls"
    }

    /// The CA that signed the test server's certificate (for `localhost` and 127.0.0.1, not
    /// 127.0.0.2) and the client certificate (`CSOP_TEST_POSTGRES_CA`).
    public static var postgresCA: String { tlsFile("CSOP_TEST_POSTGRES_CA", "ca.crt") }

    /// A CA that signed nothing the test server uses (`CSOP_TEST_POSTGRES_WRONG_CA`).
    public static var postgresWrongCA: String { tlsFile("CSOP_TEST_POSTGRES_WRONG_CA", "wrong-ca.crt") }

    /// A client certificate for user `csop`, signed by ``postgresCA`` (`CSOP_TEST_POSTGRES_CLIENT_CERT`).
    public static var postgresClientCert: String { tlsFile("CSOP_TEST_POSTGRES_CLIENT_CERT", "client.crt") }

    /// The unencrypted PEM key of ``postgresClientCert`` (`CSOP_TEST_POSTGRES_CLIENT_KEY`).
    public static var postgresClientKey: String { tlsFile("CSOP_TEST_POSTGRES_CLIENT_KEY", "client.key") }

    /// The TLS files the PostgreSQL TLS tests need that are missing; tests fail (never skip)
    /// when this is not empty.
    public static var missingPostgresTLSFiles: [String] {
        [postgresCA, postgresWrongCA, postgresClientCert, postgresClientKey].filter { !FileManager.default.isReadableFile(atPath: $0) }
    }

    private static func tlsFile(_ variable: String, _ name: String) -> String {
        ProcessInfo.processInfo.environment[variable] ?? "\(postgresTLSDirectory)/\(name)"
    }

    /// Loads a host from a fresh plugins.d holding `entries`.
    public static func makeHost(
        _ entries: [PluginEntry], in directory: TemporaryDirectory, allowInsecurePermissions: Bool = false, auditLog: AuditLog? = nil
    ) async throws -> CSOPHost {
        let plugins = try directory.writePlugins(entries)
        var configuration = HostConfiguration(
            pluginsDirectory: plugins, pluginSearchPath: [buildDirectory], searchExecutableDirectory: false,
            allowInsecurePermissions: allowInsecurePermissions)
        configuration.auditLog = auditLog
        return await CSOPHost.load(configuration)
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

extension TestEnvironment {
    /// Drops `table` from the test database (``postgresURL``), so a test leaves nothing behind.
    public static func dropTable(_ table: String) async throws {
        let url = try PostgresURL(postgresURL, field: "CSOP_TEST_POSTGRES_URL")
        let logger = Logger(label: "csop.test", factory: { _ in SwiftLogNoOpLogHandler() })
        let connection = try await PostgresConnection.connect(configuration: url.connectionConfiguration(), id: 1, logger: logger)
        try await connection.query(PostgresQuery(unsafeSQL: "DROP TABLE IF EXISTS \(table)"), logger: logger)
        try await connection.close()
    }
}
