import CSOPCore
import CSOPTestSupport
import Foundation
import Testing
@testable import StoragePlugin

/// `options.ttl`: an expired key is invisible at once to every read, and the background purge
/// removes it from the file (and the cold tier: StorageColdTierTests).
@Suite struct StorageExpiryTests {
    let directory = TemporaryDirectory.storage()

    /// By default the purge waits a day, so what a test sees is the reads' own check.
    func open(purgeInterval: Int64 = 86_400_000, _ extra: JSONObject = [:]) throws -> PluginHarness {
        var config: JSONObject = ["path": .string(directory.databasePath), "purgeInterval": .int(purgeInterval)]
        for member in extra { config[member.key] = member.value }
        return try PluginHarness(config: .object(config))
    }

    /// Waits until the wall clock has passed `milliseconds` from now (no timing is asserted:
    /// a key with that TTL is expired afterwards, however slow the machine).
    static func pass(_ milliseconds: Int64) async throws {
        let end = WallClock.milliseconds() + milliseconds
        while WallClock.milliseconds() <= end { try await Task.sleep(for: .milliseconds(5)) }
    }

    /// Rows in the file's index, read with a connection of the test's own.
    func rowsInFile(_ whereClause: String = "1") throws -> Int {
        let connection = try SQLiteConnection(path: directory.databasePath, readOnly: true, create: false, busyTimeoutMilliseconds: 5000)
        return Int(try connection.scalarText("SELECT count(*) FROM csop_storage WHERE \(whereClause)") ?? "") ?? -1
    }

    @Test func anExpiredKeyIsInvisibleToEveryReadBeforeThePurge() async throws {
        let storage = try open()
        #expect(await storage.call("save", ["key": "k:short", "data": "s", "options": ["ttl": 1]])["version"] == 1)
        #expect(await storage.call("save", ["key": "k:long", "data": "l", "options": ["ttl": 3_600_000]]).isOK)
        #expect(await storage.call("save", ["key": "k:plain", "data": "p"]).isOK)
        try await Self.pass(2)

        #expect(await storage.call("get", ["key": "k:short"]).code == "KEY_NOT_FOUND")
        #expect(await storage.call("get", ["key": "k:long"]).value == "l")
        let many = await storage.call("getMany", ["keys": ["k:short", "k:long", "k:plain"]])
        #expect(many["missing"] == ["k:short"], "\(many.value ?? .null)")
        #expect(many["values"] == ["k:long": "l", "k:plain": "p"])
        #expect(await storage.call("list", ["prefix": "k:"])["keys"] == ["k:long", "k:plain"])
        #expect(await storage.call("stats", [:])["total"]?["count"] == 2)
        // Still in the file: invisibility does not wait for the purge.
        #expect(try rowsInFile("key = 'k:short'") == 1)

        // Writes see it as missing too: ifVersion 0 (must not exist) succeeds, ifVersion 1
        // conflicts, and the version continues (never repeats).
        #expect(await storage.call("save", ["key": "k:short", "data": "x", "options": ["ifVersion": 1]]).code == "CONFLICT")
        #expect(await storage.call("save", ["key": "k:short", "data": "again", "options": ["ifVersion": 0]])["version"] == 2)
        #expect(await storage.call("get", ["key": "k:short"]).value == "again")

        #expect(await storage.call("save", ["key": "k:gone", "data": 1, "options": ["ttl": 1]]).isOK)
        try await Self.pass(2)
        #expect(await storage.call("delete", ["key": "k:gone"])["deleted"] == false)
        #expect(try rowsInFile("key = 'k:gone'") == 0)
    }

    @Test func aSaveWithoutTTLKeepsTheKeyForeverAndSaveManyTakesOneAsDefault() async throws {
        let storage = try open()
        #expect(await storage.call("save", ["key": "a", "data": 1, "options": ["ttl": 1]]).isOK)
        #expect(await storage.call("save", ["key": "a", "data": 2]).isOK)
        let batch = await storage.call("saveMany", [
            "items": [["key": "b", "data": 1], ["key": "c", "data": 1, "options": ["ttl": 3_600_000]]], "options": ["ttl": 1],
        ])
        #expect(batch.isOK, "\(batch.error?.description ?? "")")
        try await Self.pass(2)
        #expect(await storage.call("get", ["key": "a"]).value == 2)
        #expect(await storage.call("get", ["key": "b"]).code == "KEY_NOT_FOUND")
        #expect(await storage.call("get", ["key": "c"]).value == 1)
    }

    @Test func thePurgeRemovesExpiredKeysFromTheFileInBatches() async throws {
        let storage = try open(purgeInterval: 10)
        // More than one purge transaction's worth (StoragePlugin.purgeBatch).
        let count = StoragePlugin.purgeBatch * 2 + 500
        for start in stride(from: 0, to: count, by: 1000) {
            let items = (start..<min(count, start + 1000)).map { JSONValue.object(["key": .string("e\($0)"), "data": .int(Int64($0))]) }
            #expect(await storage.call("saveMany", ["items": .array(items), "options": ["ttl": 1]]).isOK)
        }
        #expect(await storage.call("save", ["key": "kept", "data": true]).isOK)
        // Bounded wait for the background purge; no time is asserted.
        let deadline = Date().addingTimeInterval(120)
        while try rowsInFile() > 1, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(try rowsInFile() == 1)
        #expect(await storage.call("get", ["key": "kept"]).value == true)
        // A purged key's version is kept, like a deleted one's.
        #expect(await storage.call("save", ["key": "e7", "data": 0])["version"] == 2)
    }

    @Test(arguments: [JSONValue.int(0), .int(-5), .string("10"), .double(1.5), .int(315_360_000_001), .bool(true)])
    func aBadTTLIsRefusedNamingTheField(_ ttl: JSONValue) async throws {
        let storage = try open()
        let reply = await storage.call("save", ["key": "k", "data": 1, "options": ["ttl": ttl]])
        #expect(reply.code == "INVALID_PAYLOAD", "ttl \(ttl)")
        #expect(reply.error?.message.contains("options.ttl") == true, "\(reply.error?.message ?? "")")
        let batch = await storage.call("saveMany", ["items": [["key": "k", "data": 1]], "options": ["ttl": ttl]])
        #expect(batch.code == "INVALID_PAYLOAD", "saveMany ttl \(ttl)")
        #expect(await storage.call("get", ["key": "k"]).code == "KEY_NOT_FOUND")
    }

    @Test func aBadPurgeIntervalIsRefusedNamingTheKey() throws {
        for bad: JSONValue in [.int(9), .int(86_400_001), .string("1s")] {
            #expect(throws: CSOPError.self) { try StorageConfiguration(config: ["path": "/tmp/x.sqlite", "purgeInterval": bad], environment: [:]) }
            do {
                _ = try StorageConfiguration(config: ["path": "/tmp/x.sqlite", "purgeInterval": bad], environment: [:])
            } catch {
                #expect(error.message.contains("config.purgeInterval"), "\(error.message)")
            }
        }
    }

    /// A file made before TTL (no `expires` column) opens, keeps its keys and takes TTLs.
    @Test func aFileFromBeforeTTLIsMigrated() async throws {
        do {
            let old = try SQLiteConnection(path: directory.databasePath, readOnly: false, create: true, busyTimeoutMilliseconds: 5000)
            try old.execute(
                """
                CREATE TABLE csop_storage (key TEXT NOT NULL PRIMARY KEY, tier INTEGER NOT NULL, version INTEGER NOT NULL,
                    size INTEGER NOT NULL, stored INTEGER NOT NULL, flags INTEGER NOT NULL, value BLOB, cold_ref TEXT);
                INSERT INTO csop_storage VALUES ('old', 0, 3, 5, 5, 0, CAST('"old"' AS BLOB), NULL);
                """)
        }
        let storage = try open()
        #expect(await storage.call("get", ["key": "old"]).value == "old")
        #expect(await storage.call("save", ["key": "old", "data": "new", "options": ["ttl": 1]])["version"] == 4)
        try await Self.pass(2)
        #expect(await storage.call("get", ["key": "old"]).code == "KEY_NOT_FOUND")
        storage.close()
        // Opening it again finds the column there.
        #expect(await (try open()).call("save", ["key": "old", "data": 1])["version"] == 5)
    }
}
