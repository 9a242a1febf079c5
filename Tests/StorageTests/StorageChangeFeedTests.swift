import CSOPCore
import CSOPTestSupport
import Foundation
import PostgresNIO
import Testing
@testable import StoragePlugin

/// `storage.watch` across processes: plugin instances that open the same SQLite file share
/// their committed changes through PostgreSQL (`watchPostgresUrl`), in the real local database.
@Suite struct StorageChangeFeedTests {
    let directory = TemporaryDirectory.storage()

    /// - Parameter purges: whether this instance purges expired keys (every 10 ms); either
    ///   instance of a file may, and the one that does announces the expiry.
    func open(purges: Bool = true) throws -> PluginHarness {
        try PluginHarness(config: [
            "path": .string(directory.databasePath), "purgeInterval": purges ? 10 : 86_400_000,
            "watchPostgresUrl": .string(TestEnvironment.postgresURL),
        ])
    }

    /// Waits until the instance's feed is listening.
    func connected(_ storage: PluginHarness) async -> Bool {
        for _ in 0..<2000 {
            if await storage.call("health", [:])["changeFeed"] == "connected" { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return false
    }

    static func changes(_ storage: PluginHarness, _ id: String) -> [JSONValue] {
        storage.events.matching { $0["subscription"]?.stringValue == id }.compactMap { $0["data"] }
    }

    @Test func anotherInstancesChangesReachTheWatchesOfThisOne() async throws {
        let watcher = try open(purges: false)
        let writer = try open()
        let watching = await connected(watcher)
        let writing = await connected(writer)
        #expect(watching && writing, "the change feed never connected")
        let alice = Caller(subject: "alice", tenant: "a", actions: .all)
        let watch = try #require(await watcher.call("watch", ["prefix": "user:"])["subscription"]?.stringValue)
        let tenantWatch = try #require(await watcher.call("watch", [:], caller: alice)["subscription"]?.stringValue)

        #expect(await writer.call("save", ["key": "user:1", "data": 1]).isOK)
        #expect(await writer.call("save", ["key": "other", "data": 1]).isOK)
        #expect(await writer.call("saveMany", ["items": [["key": "user:2", "data": 1], ["key": "user:1", "data": 2]]]).isOK)
        #expect(await writer.call("delete", ["key": "user:2"])["deleted"] == true)
        #expect(await writer.call("save", ["key": "user:1", "data": 9], caller: alice).isOK)
        #expect(await writer.call("save", ["key": "user:brief", "data": 1, "options": ["ttl": 1]]).isOK)

        _ = await watcher.events.wait(for: 7) { $0["event"] == "storage.changed" }
        let expected: [JSONValue] = [
            ["key": "user:1", "version": 1, "deleted": false],
            ["key": "user:2", "version": 1, "deleted": false],
            ["key": "user:1", "version": 2, "deleted": false],
            ["key": "user:2", "version": 1, "deleted": true],
            ["key": "user:brief", "version": 1, "deleted": false],
            ["key": "user:brief", "version": 1, "deleted": true, "expired": true],
        ]
        #expect(Self.changes(watcher, watch) == expected)
        // The tenant's own key, named as it names it; the owner's watch never sees it.
        #expect(Self.changes(watcher, tenantWatch) == [["key": "user:1", "version": 1, "deleted": false]])
        // The writer's own changes are not echoed back to it.
        let own = try #require(await writer.call("watch", [:])["subscription"]?.stringValue)
        #expect(await writer.call("save", ["key": "user:3", "data": 1]).isOK)
        _ = await watcher.events.wait(for: 1) { $0["data"]?["key"] == "user:3" }
        #expect(Self.changes(writer, own) == [["key": "user:3", "version": 1, "deleted": false]])
    }

    /// Anyone allowed to NOTIFY on the channel can send anything: what is not a change is
    /// dropped, never delivered, and the feed goes on.
    @Test func malformedPayloadsAreDroppedAndTheFeedGoesOn() async throws {
        let watcher = try open(purges: false)
        #expect(await connected(watcher), "the change feed never connected")
        let watch = try #require(await watcher.call("watch", [:])["subscription"]?.stringValue)
        let storeID = try LocalStore(configuration: StorageConfiguration(path: directory.databasePath)).storeID
        #expect(storeID.count == 16)
        let admin = try await PostgresTestConnection.open()
        let channel = "csop_storage_\(storeID)"
        let garbage = [
            "", "S", "Sx", "Sx\n", "Sx\nnot json", "Sx\n[\"k\",1,false]", "Sx\n[\"k\",0,false,false]", "Sx\n[\"\",1,false,false]",
            "Sx\n[1,1,false,false]", "Sx\n[\"k\",1,\"no\",false]", "Sx\n[\"k\",1,false,false]\n{}", "Q\n[\"k\",1,false,false]",
            "S\n[\"k\",1,false,false]",
        ]
        for payload in garbage {
            try await admin.query("SELECT pg_notify(\(channel), \(payload))", logger: PostgresTestConnection.logger)
        }
        try await admin.query(
            "SELECT pg_notify(\(channel), \("Sother\n[\"good\",3,false,false]"))", logger: PostgresTestConnection.logger)
        try await admin.close()
        _ = await watcher.events.wait(for: 1) { $0["data"]?["key"] == "good" }
        #expect(Self.changes(watcher, watch) == [["key": "good", "version": 3, "deleted": false]])
    }

    @Test func framesStayUnderTheNotifyLimitAndRoundTrip() throws {
        var changes: [WatchRegistry.Change] = []
        for i in 0..<500 {
            let key = "\u{0}tenant\u{0}key \(i) \u{1} \"quoted\" é"
            changes.append(WatchRegistry.Change(key: key, version: Int64(i + 1), deleted: i % 3 == 0, expired: i % 7 == 0))
        }
        let frames = ChangeFeed.frames(origin: "o1", changes: changes)
        #expect(frames.count > 1)
        #expect(frames.allSatisfy { $0.utf8.count <= ChangeFeed.budget })
        var back: [WatchRegistry.Change] = []
        for frame in frames { back += try #require(ChangeFeed.parse(frame, ownOrigin: "me")) }
        let keys = back.map { $0.key }, versions = back.map { $0.version }
        let flags = back.map { [$0.deleted, $0.expired] }
        #expect(keys == changes.map { $0.key })
        #expect(versions == changes.map { $0.version })
        #expect(flags == changes.map { [$0.deleted, $0.expired] })
        #expect(ChangeFeed.parse(frames[0], ownOrigin: "o1")?.isEmpty == true)
    }

    @Test func aBadFeedURLIsRefusedNamingTheKey() throws {
        #expect(throws: CSOPError.self) {
            _ = try StorageConfiguration(config: ["path": "/tmp/x.sqlite", "watchPostgresUrl": "mysql://nope"], environment: [:])
        }
        do {
            _ = try StorageConfiguration(config: ["path": "/tmp/x.sqlite", "watchPostgresUrl": "mysql://nope"], environment: [:])
        } catch {
            #expect(error.message.contains("config.watchPostgresUrl"), "\(error.message)")
        }
        let fromEnvironment = try StorageConfiguration(
            config: ["path": "/tmp/x.sqlite"], environment: ["CSOP_STORAGE_WATCH_POSTGRES_URL": TestEnvironment.postgresURL])
        #expect(fromEnvironment.watchPostgresURL != nil)
        // Opt-in: sync's cluster URL alone does not turn it on.
        let syncOnly = try StorageConfiguration(config: ["path": "/tmp/x.sqlite"], environment: ["CSOP_SYNC_POSTGRES_URL": TestEnvironment.postgresURL])
        #expect(syncOnly.watchPostgresURL == nil)
    }

    /// The same across real processes: two `csop run` sharing one SQLite file.
    @Test func aSaveInOneProcessReachesAWatchInAnother() async throws {
        let plugins = try directory.writePlugins([
            PluginEntry(
                "10-storage.conf", library: "libcsop-storage.so",
                config: ["path": .string(directory.databasePath), "watchPostgresUrl": .string(TestEnvironment.postgresURL)])
        ])
        let watcher = try RunProcess(pluginsDirectory: plugins)
        let writer = try RunProcess(pluginsDirectory: plugins)
        for process in [watcher, writer] {
            var connected = false
            for i in 0..<2000 where !connected {
                connected = try await process.call("h\(i)", "storage.health", [:], timeout: 30)?["data"]?["changeFeed"] == "connected"
                if !connected { try await Task.sleep(for: .milliseconds(5)) }
            }
            #expect(connected, "the change feed never connected")
        }
        let watch = try #require(try await watcher.call("w", "storage.watch", ["prefix": "doc:"], timeout: 30)?["data"]?["subscription"])
        #expect(try await writer.call("s1", "storage.save", ["key": "doc:1", "data": ["v": 1]], timeout: 30)?["status"] == "ok")
        #expect(try await writer.call("d1", "storage.delete", ["key": "doc:1"], timeout: 30)?["status"] == "ok")
        let seen = await watcher.waitFor(timeout: 30) { $0["data"]?["deleted"] == true }
        #expect(seen != nil)
        let changes = watcher.received.filter { $0["subscription"] == watch }.compactMap { $0["data"] }
        #expect(changes == [["key": "doc:1", "version": 1, "deleted": false], ["key": "doc:1", "version": 1, "deleted": true]])
        #expect(await watcher.finish() == 0)
        #expect(await writer.finish() == 0)
    }
}
