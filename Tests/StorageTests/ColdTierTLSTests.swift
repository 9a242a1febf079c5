import CSOPCore
import CSOPTestSupport
import Foundation
import Testing

@testable import StoragePlugin

/// The cold tier over TLS, against the local PostgreSQL that scripts/install-deps.sh sets up
/// with a test CA (certificate for `localhost` and 127.0.0.1). Fails, never skips, without it.
@Suite struct ColdTierTLSTests {
    let directory = TemporaryDirectory.storage()
    let table = StorageTestEnvironment.uniqueTable()

    init() {
        #expect(TestEnvironment.missingPostgresTLSFiles.isEmpty, "the test PKI is missing: run scripts/install-deps.sh")
    }

    func open(_ url: String) throws -> PluginHarness {
        try PluginHarness(config: [
            "path": .string(directory.databasePath), "maxLocalSize": 1000, "postgresUrl": .string(url),
            "postgresTable": .string(table),
        ])
    }

    /// Drops the test's cold table over a plain connection.
    func dropTable() async {
        guard let cold = try? ColdStore(url: TestEnvironment.postgresURL, table: table) else { return }
        try? await cold.dropTable()
    }

    /// About 2 MB of JSON: several TLS records each way.
    static let large: JSONValue = [
        "fill": .string(String(repeating: "0123456789abcdef", count: 128 * 1024)), "list": .array((0..<1000).map { .int($0) }),
    ]

    @Test func requireStoresAndReadsALargeValue() async throws {
        defer { Task { await dropTable() } }
        let storage = try open(TestEnvironment.postgresURL(query: "sslmode=require"))
        let saved = await storage.call("save", ["key": "big", "data": Self.large])
        #expect(saved["location"] == "cloud", "\(saved.value ?? .null) \(saved.error?.description ?? "")")
        #expect(saved["warning"] == nil)
        #expect(await storage.call("get", ["key": "big"]).raw == Self.large.serialized())
        #expect(await storage.call("delete", ["key": "big"])["deleted"] == true)
    }

    @Test func verifyFullWithTheRightCAStoresInTheColdTier() async throws {
        defer { Task { await dropTable() } }
        let url = TestEnvironment.postgresURL(host: "localhost", query: "sslmode=verify-full&sslrootcert=\(TestEnvironment.postgresCA)")
        let storage = try open(url)
        let saved = await storage.call("save", ["key": "doc", "data": Self.large])
        #expect(saved["location"] == "cloud", "\(saved.value ?? .null) \(saved.error?.description ?? "")")
        #expect(await storage.call("get", ["key": "doc"]).raw == Self.large.serialized())
    }

    @Test func aTLSFailureIsUnreachableAndSaysItIsATLSProblem() async throws {
        defer { Task { await dropTable() } }
        let wrongCA = TestEnvironment.postgresURL(
            host: "localhost", query: "sslmode=verify-full&sslrootcert=\(TestEnvironment.postgresWrongCA)")
        let refused = try open(wrongCA)
        let saved = await refused.call("save", ["key": "kept", "data": Self.large])
        #expect(saved["location"] == "local")
        let warning = saved["warning"]?.stringValue ?? ""
        #expect(warning.contains("is unreachable: TLS/certificate problem (sslmode=verify-full, sslrootcert"), "\(warning)")
        #expect(warning.contains("CERTIFICATE_VERIFY_FAILED"), "\(warning)")
        #expect(!warning.contains("csop:csop"), "the warning leaks the password")
        refused.close()

        // A key already in the cold tier cannot be read over a connection that fails TLS.
        let good = try open(TestEnvironment.postgresURL(query: "sslmode=require"))
        #expect(await good.call("save", ["key": "cold", "data": Self.large])["location"] == "cloud")
        good.close()
        let mismatch = try open(TestEnvironment.postgresURL(host: "127.0.0.2", query: "sslmode=verify-full&sslrootcert=\(TestEnvironment.postgresCA)"))
        let got = await mismatch.call("get", ["key": "cold"])
        #expect(got.code == "NOT_CONNECTED")
        #expect(got.error?.retryable == true)
        let message = got.error?.message ?? ""
        #expect(message.contains("TLS/certificate problem (sslmode=verify-full"), "\(message)")
        #expect(message.contains("not valid for the host name 127.0.0.2"), "\(message)")
    }

    @Test func badTLSSettingsFailPluginCreationAndCheck() throws {
        let missing = directory.file("nowhere/ca.crt")
        let url = TestEnvironment.postgresURL(query: "sslmode=verify-full&sslrootcert=\(missing)")
        let config: JSONValue = ["path": .string(directory.databasePath), "postgresUrl": .string(url)]
        for attempt in ["create", "check"] {
            do throws(CSOPError) {
                if attempt == "create" { _ = try PluginHarness(config: config) } else { try StoragePlugin.checkConfig(config) }
                Issue.record("\(attempt) accepted a missing sslrootcert")
            } catch {
                #expect(error.code == .invalidPayload)
                #expect(error.message.contains("config.postgresUrl (or CSOP_STORAGE_POSTGRES_URL): sslrootcert \(missing) cannot be read"), "\(error.message)")
                #expect(!error.message.contains("csop:csop"))
            }
        }
        do throws(CSOPError) {
            try StoragePlugin.checkConfig(["postgresUrl": .string(TestEnvironment.postgresURL(query: "sslmode=verify-none"))])
            Issue.record("check accepted sslmode=verify-none")
        } catch {
            #expect(error.message.contains("sslmode must be one of"))
        }
    }
}
