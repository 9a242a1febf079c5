public import Logging
public import PostgresNIO
import CSOPPostgres

/// A plain connection to the test database, for a test's own queries (an admin terminating
/// sessions, a NOTIFY from outside).
public enum PostgresTestConnection {
    public static let logger = Logger(label: "csop-tests", factory: { _ in SwiftLogNoOpLogHandler() })

    public static func open() async throws -> PostgresConnection {
        let url = try PostgresURL(TestEnvironment.postgresURL, field: "CSOP_TEST_POSTGRES_URL")
        let config = PostgresConnection.Configuration(
            host: url.host, port: url.port, username: url.username, password: url.password, database: url.database,
            tls: .disable)
        return try await PostgresConnection.connect(configuration: config, id: 99, logger: logger)
    }
}
