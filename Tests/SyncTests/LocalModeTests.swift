import CSOPCore
import CSOPTestSupport
import Testing

@testable import SyncPlugin

@Suite struct LocalModeTests {
    let recorder = EventRecorder()
    let engine: SyncEngine

    init() {
        engine = SyncEngine(configuration: SyncConfiguration(), emit: recorder.emit)
    }

    @Test func broadcastReachesEverySubscriberInPublishOrderBeforeItCompletes() async throws {
        let a = try #require(await engine.perform(.subscribe, ["channel": "room"]).value)
        let b = try #require(await engine.perform(.subscribe, ["channel": "room"]).value)
        _ = try #require(await engine.perform(.subscribe, ["channel": "other"]).value)
        for i in 0..<50 {
            let sent = try #require(await engine.perform(.broadcast, ["channel": "room", "event": "tick", "data": ["i": .int(Int64(i))]]).value)
            #expect(sent == ["sent": true, "channel": "room", "event": "tick", "mode": "local"])
            // Delivered synchronously: both subscribers already have it.
            #expect(recorder.all.count == 2 * (i + 1))
        }
        for subscription in [a, b] {
            let id = try #require(subscription["subscription"]?.stringValue)
            let received = recorder.matching { $0["subscription"]?.stringValue == id }
            #expect(received.map { $0["data"]?["i"] } == (0..<50).map { JSONValue.int(Int64($0)) })
            let first = try #require(received.first)
            #expect(first["type"] == "event")
            #expect(first["channel"] == "room")
            #expect(first["event"] == "tick")
            #expect(first["origin"]?.stringValue == engine.instanceID)
            #expect((first["timestamp"]?.int64Value ?? 0) > 1_600_000_000_000)
        }
    }

    @Test func defaultChannelAndMissingDataAreFilledIn() async throws {
        let sub = try #require(await engine.perform(.subscribe, [:]).value)
        #expect(sub["channel"] == "default")
        #expect(sub["subscribed"] == true)
        let sent = try #require(await engine.perform(.broadcast, ["event": "hello"]).value)
        #expect(sent["channel"] == "default")
        let event = try #require(recorder.all.first)
        #expect(event["data"] == .null)
    }

    @Test func eventFilterOnlyPassesNamedEvents() async throws {
        _ = try #require(await engine.perform(.subscribe, ["channel": "f", "events": ["a", "c"]]).value)
        for name in ["a", "b", "c", "b"] {
            _ = try #require(await engine.perform(.broadcast, ["channel": "f", "event": .string(name)]).value)
        }
        #expect(recorder.all.compactMap { $0["event"]?.stringValue } == ["a", "c"])
    }

    @Test func unsubscribeByIdAndByChannelStopsDelivery() async throws {
        let one = try #require(await engine.perform(.subscribe, ["channel": "u"]).value?["subscription"]?.stringValue)
        _ = try #require(await engine.perform(.subscribe, ["channel": "u"]).value)
        let removed = try #require(await engine.perform(.unsubscribe, ["subscription": .string(one)]).value)
        #expect(removed == ["unsubscribed": true, "channel": "u", "count": 1])
        _ = try #require(await engine.perform(.broadcast, ["channel": "u", "event": "e"]).value)
        #expect(recorder.all.count == 1)
        let all = try #require(await engine.perform(.unsubscribe, ["channel": "u"]).value)
        #expect(all == ["unsubscribed": true, "channel": "u", "count": 1])
        _ = try #require(await engine.perform(.broadcast, ["channel": "u", "event": "e"]).value)
        #expect(recorder.all.count == 1)
        let none = try #require(await engine.perform(.unsubscribe, ["channel": "u"]).value)
        #expect(none["unsubscribed"] == false)
        let again = await engine.perform(.unsubscribe, ["subscription": .string(one)])
        #expect(again.error?.code == .subscriptionFailed)
    }

    @Test func presenceJoinsOnceAndLeaveIsAnnouncedOnce() async throws {
        _ = try #require(await engine.perform(.subscribe, ["channel": "lobby"]).value)
        let first = try #require(
            await engine.perform(.presence, ["channel": "lobby", "userId": "ann", "metadata": ["status": "busy"]]).value)
        #expect(first["online"] == 1)
        let ann = try #require(first["users"]?.arrayValue?.first)
        #expect(ann["userId"] == "ann")
        #expect(ann["status"] == "busy")
        #expect(ann["onlineAt"]?.int64Value != nil)
        let again = try #require(
            await engine.perform(.presence, ["channel": "lobby", "userId": "ann", "metadata": ["status": "free"]]).value)
        #expect(again["users"]?.arrayValue?.first?["status"] == "free")
        let generated = try #require(await engine.perform(.presence, ["channel": "lobby"]).value)
        #expect(generated["online"] == 2)
        #expect(generated["userId"]?.stringValue?.hasPrefix("user-") == true)
        #expect(recorder.matching(onChannel("lobby", event: "presence.join")).count == 2)

        let left = try #require(await engine.perform(.leave, ["channel": "lobby", "userId": "ann"]).value)
        #expect(left["left"] == true)
        let twice = try #require(await engine.perform(.leave, ["channel": "lobby", "userId": "ann"]).value)
        #expect(twice["left"] == false)
        let leaves = recorder.matching(onChannel("lobby", event: "presence.leave"))
        #expect(leaves.count == 1)
        #expect(leaves.first?["data"] == ["userId": "ann", "reason": "left"])
    }

    @Test func subscriptionLimitIsEnforced() async throws {
        var config = SyncConfiguration()
        config.maxSubscriptions = 2
        let small = SyncEngine(configuration: config, emit: recorder.emit)
        _ = try #require(await small.perform(.subscribe, [:]).value)
        _ = try #require(await small.perform(.subscribe, [:]).value)
        let third = await small.perform(.subscribe, [:])
        #expect(third.error?.code == .subscriptionFailed)
        #expect(third.error?.message.contains("maxSubscriptions") == true)
    }
}
