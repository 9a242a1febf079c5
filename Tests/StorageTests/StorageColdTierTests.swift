import CSOPCore
import CSOPTestSupport
import Foundation
import Testing
@testable import StoragePlugin

/// Runs against the PostgreSQL at `CSOP_TEST_POSTGRES_URL`; fails (never skips) when it is unreachable.
@Suite struct StorageColdTierTests {
    let directory = TemporaryDirectory.storage()
    let table = StorageTestEnvironment.uniqueTable()

    func open(maxLocalSize: Int64 = 1000, url: String = TestEnvironment.postgresURL, purgeInterval: Int64 = 1000) throws -> PluginHarness {
        try PluginHarness(config: [
            "path": .string(directory.databasePath), "maxLocalSize": .int(maxLocalSize), "postgresUrl": .string(url),
            "postgresTable": .string(table), "encryptionKey": .string(StorageTestEnvironment.encryptionKey),
            "purgeInterval": .int(purgeInterval),
        ])
    }

    /// The test's own view of the cold table; fails the test when PostgreSQL is down.
    func coldTable() async throws -> ColdStore {
        let cold = try ColdStore(url: TestEnvironment.postgresURL, table: table)
        do throws(ColdStore.Failure) {
            _ = try await cold.rows(forKey: "probe")
        } catch {
            Issue.record("PostgreSQL at \(TestEnvironment.postgresURL) is required: \(error.error.message)")
            throw error.error
        }
        return cold
    }

    func rows(_ cold: ColdStore, _ key: String) async throws -> [[UInt8]] {
        do throws(ColdStore.Failure) { return try await cold.rows(forKey: key) } catch { throw error.error }
    }

    static func big(_ tag: String, _ count: Int = 5000) -> JSONValue {
        ["tag": .string(tag), "fill": .string(String(repeating: "b", count: count))]
    }

    @Test func aKeyLivesInExactlyOneTierAsItMoves() async throws {
        let cold = try await coldTable()
        defer { Task { try? await cold.dropTable() } }
        let storage = try open()

        let first = await storage.call("save", ["key": "doc", "data": Self.big("one")])
        #expect(first["location"] == "cloud", "\(first.value ?? .null) \(first.error?.description ?? "")")
        #expect(first["warning"] == nil)
        #expect(await storage.call("get", ["key": "doc"]).raw == Self.big("one").serialized())
        #expect(try await rows(cold, "doc").count == 1)

        let second = await storage.call("save", ["key": "doc", "data": Self.big("two")])
        #expect(second["location"] == "cloud")
        #expect(second["version"] == 2)
        #expect(try await rows(cold, "doc").count == 1)
        #expect(await storage.call("get", ["key": "doc"]).raw == Self.big("two").serialized())

        let small = await storage.call("save", ["key": "doc", "data": "small now"])
        #expect(small["location"] == "local")
        #expect(small["version"] == 3)
        #expect(try await rows(cold, "doc").isEmpty)
        #expect(await storage.call("get", ["key": "doc"]).value == "small now")

        _ = await storage.call("save", ["key": "doc", "data": Self.big("three")])
        _ = await storage.call("save", ["key": "a-local", "data": 1])
        #expect(await storage.call("list", [:])["keys"] == ["a-local", "doc"])
        let stats = await storage.call("stats", [:])
        #expect(stats["cloud"]?["count"] == 1)
        #expect(stats["local"]?["count"] == 1)

        #expect(await storage.call("delete", ["key": "doc"])["deleted"] == true)
        #expect(try await rows(cold, "doc").isEmpty)
        #expect(await storage.call("get", ["key": "doc"]).code == "KEY_NOT_FOUND")
    }

    @Test func coldRowsAreEncryptedAndConflictsLeaveNothingBehind() async throws {
        let cold = try await coldTable()
        defer { Task { try? await cold.dropTable() } }
        let storage = try open()
        let secret = "cold-secret-\(UUID().uuidString)"
        let value: JSONValue = ["secret": .string(secret), "fill": .string(String(repeating: "s", count: 3000))]
        let saved = await storage.call("save", ["key": "enc", "data": value, "options": ["encrypt": true, "compress": true]])
        #expect(saved["location"] == "cloud")
        let stored = try await rows(cold, "enc")
        #expect(stored.count == 1)
        #expect(!(stored.first ?? []).containsBytes(Array(secret.utf8)))
        #expect(await storage.call("get", ["key": "enc"]).raw == value.serialized())

        let conflict = await storage.call("save", ["key": "enc", "data": Self.big("x"), "options": ["ifVersion": 5]])
        #expect(conflict.code == "CONFLICT")
        #expect(try await rows(cold, "enc").count == 1)
        #expect(await storage.call("get", ["key": "enc"]).raw == value.serialized())
    }

    @Test func saveManyAndGetManySpanBothTiers() async throws {
        let cold = try await coldTable()
        defer { Task { try? await cold.dropTable() } }
        let storage = try open()
        let saved = await storage.call(
            "saveMany", ["items": [["key": "m1", "data": Self.big("m1")], ["key": "m2", "data": 2], ["key": "m3", "data": Self.big("m3")]]])
        #expect(saved["items"]?.arrayValue?.map { $0["location"] } == ["cloud", "local", "cloud"])
        let failed = await storage.call(
            "saveMany", ["items": [["key": "m4", "data": Self.big("m4")], ["key": "m2", "data": 3, "options": ["ifVersion": 9]]]])
        #expect(failed.code == "CONFLICT")
        #expect(try await rows(cold, "m4").isEmpty)
        let many = await storage.call("getMany", ["keys": ["m1", "m2", "m3", "m4"]])
        #expect(many.value == ["values": ["m1": Self.big("m1"), "m2": 2, "m3": Self.big("m3")], "missing": ["m4"]])
    }

    @Test func unreachableColdTierKeepsLargeValuesLocalWithAWarning() async throws {
        let storage = try open(url: "postgres://csop:csop@127.0.0.1:1/csop_test")
        let saved = await storage.call("save", ["key": "big", "data": Self.big("u")])
        #expect(saved["location"] == "local")
        #expect(saved["warning"]?.stringValue?.contains("unreachable") == true)
        #expect(saved["warning"]?.stringValue?.contains("csop:csop") == false, "the warning leaks the password")
        #expect(await storage.call("get", ["key": "big"]).raw == Self.big("u").serialized())
    }

    @Test func noColdTierKeepsLargeValuesLocalWithAWarning() async throws {
        let storage = try PluginHarness(config: ["path": .string(directory.databasePath), "maxLocalSize": 100])
        let saved = await storage.call("save", ["key": "big", "data": Self.big("n")])
        #expect(saved["location"] == "local")
        #expect(saved["warning"]?.stringValue?.contains("config.postgresUrl") == true)
        #expect(await storage.call("get", ["key": "big"]).raw == Self.big("n").serialized())
    }

    /// A crash between a cold write and its index row leaves an orphan; the sweep removes old
    /// ones and nothing that a key references or that a save may still be about to reference.
    @Test func theSweepRemovesOldOrphansOnly() async throws {
        let cold = try await coldTable()
        let storage = try open()
        #expect(await storage.call("save", ["key": "kept", "data": Self.big("kept")])["location"] == "cloud")
        #expect(await storage.call("save", ["key": "moved", "data": Self.big("moved")])["location"] == "cloud")
        #expect(await storage.call("save", ["key": "moved", "data": 1])["location"] == "local")
        do throws(ColdStore.Failure) {
            try await cold.put(ref: "orphan-old", key: "lost", tenant: nil, bytes: [1, 2, 3], callID: 0)
            try await cold.backdateAll(seconds: 3 * 3600)
            try await cold.put(ref: "orphan-young", key: "young", tenant: "t", bytes: [4], callID: 0)
        } catch {
            throw error.error
        }
        let swept = await storage.call("sweep", [:])
        #expect(swept.value == ["checked": 2, "removed": 1, "coldTier": true], "\(swept.value ?? .null)")
        #expect(try await rows(cold, "lost").isEmpty)
        #expect(try await rows(cold, "kept").count == 1)
        #expect(await storage.call("get", ["key": "kept"]).value == Self.big("kept"))
        // A younger orphan may belong to a save still running: it stays until it is old enough.
        #expect(await storage.call("sweep", ["olderThan": 60]).value == ["checked": 1, "removed": 0, "coldTier": true])
        #expect(await storage.call("sweep", ["olderThan": 59]).code == "INVALID_PAYLOAD")
        // Tenants may not run it: it sees every tenant's rows.
        let tenant = Caller(subject: "u", tenant: "t", actions: .all)
        #expect(await storage.call("sweep", [:], caller: tenant).code == "FORBIDDEN")
    }

    /// An expired cloud value is invisible at once and the purge deletes its cold row too.
    @Test func thePurgeRemovesAnExpiredValueFromTheColdTier() async throws {
        let cold = try await coldTable()
        defer { Task { try? await cold.dropTable() } }
        let storage = try open(purgeInterval: 10)
        #expect(await storage.call("save", ["key": "brief", "data": Self.big("brief"), "options": ["ttl": 1]])["location"] == "cloud")
        #expect(await storage.call("save", ["key": "stays", "data": Self.big("stays"), "options": ["ttl": 3_600_000]])["location"] == "cloud")
        try await StorageExpiryTests.pass(2)
        #expect(await storage.call("get", ["key": "brief"]).code == "KEY_NOT_FOUND")
        // Bounded wait for the background purge; no time is asserted.
        let deadline = Date().addingTimeInterval(120)
        while try await !rows(cold, "brief").isEmpty, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(try await rows(cold, "brief").isEmpty)
        #expect(try await rows(cold, "stays").count == 1)
        #expect(await storage.call("get", ["key": "stays"]).value == Self.big("stays"))
    }

    /// storage.rotate writes a cold value's new bytes to a new cold row, points the index at
    /// it and deletes the old row.
    @Test func rotationMovesAColdValueToANewRowUnderTheNewKey() async throws {
        let cold = try await coldTable()
        defer { Task { try? await cold.dropTable() } }
        let base: JSONObject = [
            "path": .string(directory.databasePath), "maxLocalSize": 1000, "postgresUrl": .string(TestEnvironment.postgresURL),
            "postgresTable": .string(table),
        ]
        let value = Self.big("secret")
        do {
            let before = try open()
            #expect(await before.call("save", ["key": "doc", "data": value, "options": ["encrypt": true]])["location"] == "cloud")
            before.close()
        }
        let oldRows = try await rows(cold, "doc")
        #expect(oldRows.count == 1)
        var both = base
        both["encryptionKeys"] = ["default": .string(StorageTestEnvironment.encryptionKey), "next": .string(StorageTestEnvironment.otherEncryptionKey)]
        both["encryptionKeyId"] = "next"
        let rotating = try PluginHarness(config: .object(both))
        let reply = await rotating.call("rotate", [:])
        #expect(reply["rotated"] == 1, "\(reply.value ?? .null) \(reply.error?.description ?? "")")
        #expect(reply["remaining"] == 0)
        let newRows = try await rows(cold, "doc")
        #expect(newRows.count == 1)
        #expect(newRows != oldRows)
        rotating.close()
        var after = base
        after["encryptionKeys"] = ["next": .string(StorageTestEnvironment.otherEncryptionKey)]
        #expect(await (try PluginHarness(config: .object(after))).call("get", ["key": "doc"]).value == value)
    }
}
