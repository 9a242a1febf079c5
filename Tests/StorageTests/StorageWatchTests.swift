import CSOPCore
import CSOPTestSupport
import Foundation
import Testing
@testable import StoragePlugin

/// `storage.watch`: committed saves, deletes and expiries of the watched keys arrive as
/// `storage.changed` events for the watch's subscription id, and nothing else does.
@Suite struct StorageWatchTests {
    let directory = TemporaryDirectory.storage()

    func open(_ extra: JSONObject = [:]) throws -> PluginHarness {
        var config: JSONObject = ["path": .string(directory.databasePath), "purgeInterval": 10]
        for member in extra { config[member.key] = member.value }
        return try PluginHarness(config: .object(config))
    }

    static func changes(_ storage: PluginHarness, _ id: String) -> [JSONValue] {
        storage.events.matching { $0["subscription"]?.stringValue == id }.compactMap { $0["data"] }
    }

    @Test func aWatchSeesEveryCommittedChangeOfItsKeysInOrder() async throws {
        let storage = try open(["maxLocalSize": 300_000])
        let watched = try #require(await storage.call("watch", ["prefix": "user:"]).value)
        #expect(watched["watching"] == true)
        #expect(watched["prefix"] == "user:")
        let id = try #require(watched["subscription"]?.stringValue)
        #expect(id.hasPrefix("watch_"))

        #expect(await storage.call("save", ["key": "user:1", "data": 1]).isOK)  // the inline path
        #expect(await storage.call("save", ["key": "other", "data": 1]).isOK)  // not watched
        #expect(await storage.call("save", ["key": "user:1", "data": 2, "options": ["ifVersion": 1]]).isOK)  // the transaction
        #expect(await storage.call("save", ["key": "user:1", "data": 3, "options": ["ifVersion": 1]]).code == "CONFLICT")  // nothing committed
        #expect(await storage.call("saveMany", ["items": [["key": "user:2", "data": 1], ["key": "user:3", "data": 1]]]).isOK)
        let big = JSONValue.string(String(repeating: "x", count: 270_000))
        #expect(await storage.call("save", ["key": "user:big", "data": big]).isOK)  // off the calling thread
        #expect(await storage.call("delete", ["key": "user:1"])["deleted"] == true)
        #expect(await storage.call("delete", ["key": "user:none"])["deleted"] == false)  // nothing to announce
        #expect(await storage.call("save", ["key": "user:brief", "data": 1, "options": ["ttl": 1]]).isOK)

        // The purge announces the expiry.
        await storage.events.wait(for: 1) { $0["data"]?["expired"] == true }
        let expected: [JSONValue] = [
            ["key": "user:1", "version": 1, "deleted": false],
            ["key": "user:1", "version": 2, "deleted": false],
            ["key": "user:2", "version": 1, "deleted": false],
            ["key": "user:3", "version": 1, "deleted": false],
            ["key": "user:big", "version": 1, "deleted": false],
            ["key": "user:1", "version": 2, "deleted": true],
            ["key": "user:brief", "version": 1, "deleted": false],
            ["key": "user:brief", "version": 1, "deleted": true, "expired": true],
        ]
        #expect(Self.changes(storage, id) == expected)
        let event = try #require(storage.events.all.first)
        #expect(event["type"] == "event")
        #expect(event["event"] == "storage.changed")

        #expect(await storage.call("unwatch", ["subscription": .string(id)]).value == ["unwatched": true, "subscription": .string(id)])
        #expect(await storage.call("save", ["key": "user:after", "data": 1]).isOK)
        #expect(Self.changes(storage, id).count == expected.count)
        #expect(await storage.call("unwatch", ["subscription": .string(id)]).code == "SUBSCRIPTION_FAILED")
    }

    @Test func aWatchSeesOnlyItsOwnNamespace() async throws {
        let storage = try open()
        let alice = Caller(subject: "alice", tenant: "a", actions: .all)
        let bob = Caller(subject: "bob", tenant: "b", actions: .all)
        let ownerWatch = try #require(await storage.call("watch", [:])["subscription"]?.stringValue)
        let aliceWatch = try #require(await storage.call("watch", [:], caller: alice)["subscription"]?.stringValue)
        #expect(await storage.call("save", ["key": "k", "data": 1], caller: alice).isOK)
        #expect(await storage.call("save", ["key": "k", "data": 1], caller: bob).isOK)
        #expect(await storage.call("save", ["key": "k", "data": 1]).isOK)
        #expect(await storage.call("save", ["key": "k", "data": 2]).isOK)
        // Each sees its own `k`, named as it names it.
        #expect(Self.changes(storage, aliceWatch) == [["key": "k", "version": 1, "deleted": false]])
        #expect(Self.changes(storage, ownerWatch) == [["key": "k", "version": 1, "deleted": false], ["key": "k", "version": 2, "deleted": false]])
        // Another tenant cannot end it: it is not found, as an unknown id.
        #expect(await storage.call("unwatch", ["subscription": .string(aliceWatch)], caller: bob).code == "SUBSCRIPTION_FAILED")
        #expect(await storage.call("unwatch", ["subscription": .string(aliceWatch)]).code == "SUBSCRIPTION_FAILED")
        #expect(await storage.call("unwatch", ["subscription": .string(aliceWatch)], caller: alice).isOK)
    }

    @Test func badWatchRequestsAreRefusedNamingTheField() async throws {
        let storage = try open(["maxWatches": 2])
        for (payload, message) in [
            (#"{"prefix":7}"#, "payload.prefix must be a string"),
            (#"{"prefix":"a\u0000"}"#, "payload.prefix must not contain NUL"),
            (#"{"channel":"x"}"#, "unknown field payload.channel"),
        ] {
            let reply = await storage.call("watch", rawPayload: Array(payload.utf8))
            #expect(reply.code == "INVALID_PAYLOAD", "\(payload)")
            #expect(reply.error?.message.contains(message) == true, "\(reply.error?.message ?? "")")
        }
        #expect(await storage.call("unwatch", [:]).error?.message.contains("payload.subscription is required") == true)
        #expect(await storage.call("watch", [:]).isOK)
        #expect(await storage.call("watch", [:]).isOK)
        let full = await storage.call("watch", [:])
        #expect(full.code == "SUBSCRIPTION_FAILED")
        #expect(full.error?.message.contains("maxWatches") == true)
        #expect(storage.events.all.isEmpty)
    }
}
