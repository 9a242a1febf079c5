import CSOPCore
import CSOPPostgres
import CSOPTestSupport
import Dispatch
import Logging
import PostgresNIO
import Synchronization
import Testing

@testable import SyncPlugin

/// TLS against the local PostgreSQL that scripts/install-deps.sh sets up: `ssl = on` with a
/// certificate for `localhost` and 127.0.0.1 (not 127.0.0.2, also loopback) signed by the test
/// CA. Connections are made with ``PostgresURL/connectionConfiguration(connectTimeoutMilliseconds:)``,
/// the one configuration the cold tier and cluster sync use. Fails, never skips, without that setup.
@Suite struct PostgresTLSTests {
    static let logger = Logger(label: "tls-tests", factory: { _ in SwiftLogNoOpLogHandler() })

    var ca: String { TestEnvironment.postgresCA }
    var wrongCA: String { TestEnvironment.postgresWrongCA }

    init() {
        #expect(TestEnvironment.missingPostgresTLSFiles.isEmpty, "the test PKI is missing: run scripts/install-deps.sh")
    }

    /// What the server says about this very session's encryption.
    struct Session: Equatable {
        var ssl: Bool
        var clientDN: String?
    }

    /// Connects with the URL's own configuration and asks pg_stat_ssl about the session.
    func session(_ text: String) async throws -> Session {
        let url = try PostgresURL(text, field: "test URL")
        let connection = try await PostgresConnection.connect(
            configuration: url.connectionConfiguration(), id: 1, logger: Self.logger)
        defer { connection.closeInBackground() }
        let rows = try await connection.query(
            "SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()", logger: Self.logger)
        for try await (ssl, clientDN) in rows.decode((Bool, String?).self) {
            return Session(ssl: ssl, clientDN: clientDN)
        }
        throw PostgresURLTestFailure(description: "pg_stat_ssl has no row for this session")
    }

    /// The connection error for `text`, described as the plugins describe it; nil when it connected.
    func failure(_ text: String) async throws -> String? {
        let url = try PostgresURL(text, field: "test URL")
        do {
            let connection = try await PostgresConnection.connect(
                configuration: url.connectionConfiguration(), id: 1, logger: Self.logger)
            connection.closeInBackground()
            return nil
        } catch {
            return url.describe(connectionError: error)
        }
    }

    @Test func theServerHasTLSOnAndPlainConnectionsStillWork() async throws {
        #expect(try await session(TestEnvironment.postgresURL(query: "sslmode=disable")) == Session(ssl: false))
        // The default, prefer, encrypts when the server offers TLS.
        #expect(try await session(TestEnvironment.postgresURL).ssl)
        #expect(try await session(TestEnvironment.postgresURL(query: "sslmode=allow")).ssl)
    }

    @Test func requireEncryptsWithoutACertificateCheck() async throws {
        #expect(try await session(TestEnvironment.postgresURL(query: "sslmode=require")) == Session(ssl: true))
        // 127.0.0.2 is not in the certificate, and require does not care.
        #expect(try await session(TestEnvironment.postgresURL(host: "127.0.0.2", query: "sslmode=require")).ssl)
    }

    @Test func verifyFullWithTheRightCAConnectsByNameAndByIP() async throws {
        #expect(try await session(TestEnvironment.postgresURL(host: "localhost", query: "sslmode=verify-full&sslrootcert=\(ca)")).ssl)
        #expect(try await session(TestEnvironment.postgresURL(host: "127.0.0.1", query: "sslmode=verify-full&sslrootcert=\(ca)")).ssl)
    }

    @Test func verifyFullWithTheWrongCAIsRefused() async throws {
        for mode in ["verify-full", "verify-ca", "require"] {
            let message = try #require(
                await failure(TestEnvironment.postgresURL(host: "localhost", query: "sslmode=\(mode)&sslrootcert=\(wrongCA)")),
                "sslmode=\(mode) with the wrong CA connected")
            #expect(message.hasPrefix("TLS/certificate problem (sslmode=\(mode), sslrootcert \(wrongCA))"), "\(message)")
            #expect(message.contains("could not be verified against sslrootcert"), "\(message)")
            #expect(message.contains("CERTIFICATE_VERIFY_FAILED"), "\(message)")
            #expect(!message.contains("csop:csop"))
        }
    }

    @Test func verifyFullChecksTheHostNameAndVerifyCADoesNot() async throws {
        let mismatch = try #require(
            await failure(TestEnvironment.postgresURL(host: "127.0.0.2", query: "sslmode=verify-full&sslrootcert=\(ca)")),
            "verify-full accepted a certificate that does not name 127.0.0.2")
        #expect(mismatch.hasPrefix("TLS/certificate problem (sslmode=verify-full, sslrootcert \(ca))"), "\(mismatch)")
        #expect(mismatch.contains("not valid for the host name 127.0.0.2"), "\(mismatch)")
        #expect(try await session(TestEnvironment.postgresURL(host: "127.0.0.2", query: "sslmode=verify-ca&sslrootcert=\(ca)")).ssl)
    }

    @Test func theClientCertificateIsPresented() async throws {
        let query = "sslmode=verify-full&sslrootcert=\(ca)&sslcert=\(TestEnvironment.postgresClientCert)&sslkey=\(TestEnvironment.postgresClientKey)"
        #expect(try await session(TestEnvironment.postgresURL(host: "localhost", query: query)) == Session(ssl: true, clientDN: "/CN=csop"))
        #expect(try await session(TestEnvironment.postgresURL(query: "sslmode=require")).clientDN == nil)
    }

    @Test func requireFailsAgainstAServerWithoutTLS() async throws {
        let server = try await PrivatePostgres.make()
        defer { server.destroy() }
        #expect(try await session(server.url).ssl == false)
        let message = try #require(await failure(server.url + "?sslmode=require"), "require connected without TLS")
        #expect(message.hasPrefix("TLS/certificate problem (sslmode=require)"), "\(message)")
        #expect(message.contains("the server does not accept TLS connections"), "\(message)")
    }

    @Test func clusterSyncConnectsOverTLSAndDelivers() async throws {
        let cluster = uniqueName("tls")
        let verifyFull = TestEnvironment.postgresURL(host: "localhost", query: "sslmode=verify-full&sslrootcert=\(ca)")
        let a = SyncEngine(
            configuration: try SyncTestEnvironment.clusterConfig(url: TestEnvironment.postgresURL(query: "sslmode=require"), cluster: cluster),
            emit: { _ in })
        let bEvents = EventRecorder()
        let b = SyncEngine(configuration: try SyncTestEnvironment.clusterConfig(url: verifyFull, cluster: cluster), emit: bEvents.emit)
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let channel = uniqueName("secure")
        let subscribed = await b.perform(.subscribe, ["channel": .string(channel)])
        #expect(subscribed.value?["subscribed"] == true, "\(String(describing: subscribed.error))")
        #expect(b.cluster?.isConnected == true)
        let sent = await a.perform(.broadcast, ["channel": .string(channel), "event": "hello", "data": "over TLS"])
        #expect(sent.value?["mode"] == "cluster", "\(String(describing: sent.error))")
        let received = await bEvents.wait(for: 1, onChannel(channel, event: "hello"))
        #expect(received.first?["data"] == "over TLS")
        // Both instances' sessions are encrypted.
        let admin = try await PostgresTestConnection.open()
        defer { admin.closeInBackground() }
        let rows = try await admin.query(
            """
            SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
            WHERE a.application_name IN (\(a.cluster!.applicationName), \(b.cluster!.applicationName))
            """, logger: Self.logger)
        for try await (encrypted, total) in rows.decode((Int, Int).self) {
            #expect(total == 4)
            #expect(encrypted == total)
        }
    }

    @Test func clusterSyncWithTheWrongCAFailsNotConnectedAndLogsWhy() async throws {
        let logs = Mutex<[String]>([])
        let url = TestEnvironment.postgresURL(host: "localhost", query: "sslmode=verify-full&sslrootcert=\(wrongCA)")
        let engine = SyncEngine(
            configuration: try SyncTestEnvironment.clusterConfig(url: url, cluster: uniqueName("tlsbad")),
            emit: { _ in }, log: { _, message in logs.withLock { $0.append(message) } })
        defer { Task { await engine.shutdown() } }
        let sent = await engine.perform(.broadcast, ["event": "lost"])
        let error = try #require(sent.error)
        #expect(error.code == .notConnected)
        #expect(error.retryable)
        #expect(error.message.contains("TLS/certificate problem (sslmode=verify-full"), "\(error.message)")
        #expect(!error.message.contains("csop:csop"))
        let warning = logs.withLock { $0.first { $0.contains("TLS/certificate problem") } }
        #expect(warning?.contains("CERTIFICATE_VERIFY_FAILED") == true, "\(logs.withLock { $0 })")
    }
}

struct PostgresURLTestFailure: Error, CustomStringConvertible {
    var description: String
}
