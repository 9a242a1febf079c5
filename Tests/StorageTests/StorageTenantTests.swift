import CSOPCore
import CSOPTestSupport
import Foundation
import Testing

@testable import StoragePlugin

/// Each tenant sees only its own keys; the owner (no caller) keeps today's behaviour.
@Suite struct StorageTenantTests {
    let directory = TemporaryDirectory.storage()
    static let a = Caller(subject: "alice", tenant: "tenant-a", actions: .all)
    static let b = Caller(subject: "bob", tenant: "tenant-b", actions: .all)

    func open(_ extra: JSONObject = [:]) throws -> PluginHarness {
        var config: JSONObject = ["path": .string(directory.databasePath), "encryptionKey": .string(StorageTestEnvironment.encryptionKey)]
        for member in extra { config[member.key] = member.value }
        return try PluginHarness(config: .object(config))
    }

    @Test func aTenantCannotReadListOverwriteDeleteOrCountAnothersKeys() async throws {
        let storage = try open()
        let a = Self.a, b = Self.b
        #expect(await storage.call("save", ["key": "doc", "data": "of a", "options": ["encrypt": true]], caller: a)["key"] == "doc")
        #expect(await storage.call("save", ["key": "doc", "data": "of the owner"])["version"] == 1)

        let missing = await storage.call("get", ["key": "doc"], caller: b)
        #expect(missing.code == "KEY_NOT_FOUND")
        #expect(missing.error?.message == "no value is stored under 'doc'")
        #expect(await storage.call("list", [:], caller: b)["keys"] == [])
        #expect(await storage.call("getMany", ["keys": ["doc"]], caller: b).value == ["values": [:], "missing": ["doc"]])
        #expect(await storage.call("stats", [:], caller: b)["total"]?["count"] == 0)

        // b's save makes b's own key: a's and the owner's are untouched.
        #expect(await storage.call("save", ["key": "doc", "data": "of b"], caller: b)["version"] == 1)
        #expect(await storage.call("get", ["key": "doc"], caller: a).value == "of a")
        #expect(await storage.call("get", ["key": "doc"], caller: b).value == "of b")
        #expect(await storage.call("get", ["key": "doc"]).value == "of the owner")

        // ifVersion sees only the tenant's own version, and the conflict names the user's key.
        let conflict = await storage.call("save", ["key": "doc", "data": 1, "options": ["ifVersion": 0]], caller: b)
        #expect(conflict.code == "CONFLICT")
        #expect(conflict.error?.message.hasPrefix("'doc' is at version 1") == true)

        #expect(await storage.call("delete", ["key": "doc"], caller: b).value == ["deleted": true, "key": "doc"])
        #expect(await storage.call("delete", ["key": "doc"], caller: b)["deleted"] == false)
        #expect(await storage.call("get", ["key": "doc"], caller: a).value == "of a")
        #expect(await storage.call("get", ["key": "doc"]).value == "of the owner")

        #expect(await storage.call("list", [:], caller: a)["keys"] == ["doc"])
        #expect(await storage.call("stats", [:], caller: a)["total"]?["count"] == 1)
        // The owner's list and stats hold the owner's keys only.
        #expect(await storage.call("list", [:])["keys"] == ["doc"])
        #expect(await storage.call("stats", [:])["total"]?["count"] == 1)
        #expect(await storage.call("getMany", ["keys": ["doc", "x"]], caller: a).value == ["values": ["doc": "of a"], "missing": ["x"]])
    }

    @Test func listPagesThroughATenantsKeysWithoutTheInternalPrefix() async throws {
        let storage = try open()
        let items: [JSONValue] = ["p1", "p2", "p3", "q"].map { ["key": .string($0), "data": 1] }
        #expect(await storage.call("saveMany", ["items": .array(items)], caller: Self.a)["count"] == 4)
        #expect(await storage.call("save", ["key": "p0", "data": 1], caller: Self.b).isOK)
        #expect(await storage.call("save", ["key": "p9", "data": 1]).isOK)
        let first = await storage.call("list", ["prefix": "p", "limit": 2], caller: Self.a)
        #expect(first.value == ["keys": ["p1", "p2"], "cursor": "p2"])
        let next = await storage.call("list", ["prefix": "p", "limit": 2, "cursor": "p2"], caller: Self.a)
        #expect(next.value == ["keys": ["p3"], "cursor": .null])
        #expect(await storage.call("list", [:], caller: Self.a)["keys"] == ["p1", "p2", "p3", "q"])
        #expect(await storage.call("list", ["prefix": "p"])["keys"] == ["p9"])
    }

    @Test func eachTenantIsHeldToTheQuotaOnItsOwn() async throws {
        let storage = try open(["maxBytes": 100])
        let sixty = JSONValue.string(String(repeating: "x", count: 60))
        #expect(await storage.call("save", ["key": "k", "data": sixty], caller: Self.a).isOK)
        #expect(await storage.call("save", ["key": "k", "data": sixty], caller: Self.b).isOK)
        #expect(await storage.call("save", ["key": "k", "data": sixty]).isOK)
        let over = await storage.call("save", ["key": "more", "data": sixty], caller: Self.a)
        #expect(over.code == "QUOTA_EXCEEDED")
        #expect(await storage.call("get", ["key": "more"], caller: Self.a).code == "KEY_NOT_FOUND")
        #expect(await storage.call("delete", ["key": "k"], caller: Self.a)["deleted"] == true)
        #expect(await storage.call("save", ["key": "more", "data": sixty], caller: Self.a).isOK)
        #expect(await storage.call("save", ["key": "more", "data": sixty], caller: Self.b).code == "QUOTA_EXCEEDED")
    }

    /// A host older than the caller fields sends a smaller csop_call: the plugin sees the owner.
    @Test func anOldSizedCallHasNoCaller() async throws {
        let storage = try open()
        let old = PluginHarness.callSizeWithoutCaller
        #expect(await storage.call("save", ["key": "k", "data": "old host"], caller: Self.a, callStructSize: old).isOK)
        #expect(await storage.call("get", ["key": "k"]).value == "old host")
        #expect(await storage.call("get", ["key": "k"], caller: Self.a).code == "KEY_NOT_FOUND")
    }

    /// A caller the plugin cannot use fails the call; it never runs as the owner.
    @Test func anUnusableCallerIsRefused() async throws {
        let storage = try open()
        #expect(await storage.call("save", ["key": "k", "data": 1]).isOK)
        let bad = Caller(subject: "bad\u{1}subject", actions: .all)
        let reply = await storage.call("get", ["key": "k"], caller: bad)
        #expect(reply.code == "UNAUTHENTICATED")
    }
}

/// The cold tier keeps tenants apart too. Runs against the PostgreSQL at
/// `CSOP_TEST_POSTGRES_URL`; fails (never skips) when it is unreachable.
@Suite struct StorageTenantColdTierTests {
    let directory = TemporaryDirectory.storage()
    let table = StorageTestEnvironment.uniqueTable()

    static func big(_ tag: String) -> JSONValue {
        ["tag": .string(tag), "fill": .string(String(repeating: "b", count: 5000))]
    }

    func rows(_ cold: ColdStore, _ key: String, tenant: String?) async throws -> Int {
        do throws(ColdStore.Failure) { return try await cold.rows(forKey: key, tenant: tenant).count } catch { throw error.error }
    }

    @Test func coldValuesAreKeptPerTenant() async throws {
        let storage = try PluginHarness(config: [
            "path": .string(directory.databasePath), "maxLocalSize": 1000, "postgresUrl": .string(TestEnvironment.postgresURL),
            "postgresTable": .string(table), "encryptionKey": .string(StorageTestEnvironment.encryptionKey),
        ])
        let cold = try ColdStore(url: TestEnvironment.postgresURL, table: table)
        defer { Task { try? await cold.dropTable() } }
        let a = StorageTenantTests.a, b = StorageTenantTests.b

        let saved = await storage.call("save", ["key": "doc", "data": Self.big("a"), "options": ["encrypt": true]], caller: a)
        #expect(saved["location"] == "cloud", "\(saved.value ?? .null) \(saved.error?.description ?? "")")
        #expect(saved["key"] == "doc")
        #expect(await storage.call("get", ["key": "doc"], caller: b).code == "KEY_NOT_FOUND")
        #expect(await storage.call("get", ["key": "doc"]).code == "KEY_NOT_FOUND")
        #expect(await storage.call("get", ["key": "doc"], caller: a).raw == Self.big("a").serialized())
        #expect(await storage.call("stats", [:], caller: a)["cloud"]?["count"] == 1)
        #expect(await storage.call("stats", [:], caller: b)["cloud"]?["count"] == 0)

        #expect(await storage.call("save", ["key": "doc", "data": Self.big("b")], caller: b)["location"] == "cloud")
        #expect(await storage.call("save", ["key": "doc", "data": Self.big("owner")])["location"] == "cloud")
        #expect(try await rows(cold, "doc", tenant: "tenant-a") == 1)
        #expect(try await rows(cold, "doc", tenant: "tenant-b") == 1)
        #expect(try await rows(cold, "doc", tenant: nil) == 1)

        #expect(await storage.call("delete", ["key": "doc"], caller: b)["deleted"] == true)
        #expect(try await rows(cold, "doc", tenant: "tenant-b") == 0)
        #expect(await storage.call("getMany", ["keys": ["doc"]], caller: a)["values"]?["doc"] == Self.big("a"))
        #expect(await storage.call("get", ["key": "doc"]).raw == Self.big("owner").serialized())
    }
}
