import CSOPCore
import CSOPTestSupport
import Testing

@testable import SyncPlugin

/// Channels, subscriptions and presence are per tenant; the owner (no caller) keeps its own.
@Suite struct SyncTenantTests {
    static let a = Caller(subject: "alice", tenant: "tenant-a", actions: .all)
    static let b = Caller(subject: "bob", tenant: "tenant b/é", actions: .all)

    func subscribe(_ engine: SyncEngine, _ channel: String, _ caller: Caller?) async throws -> String {
        let result = await engine.perform(.subscribe, ["channel": .string(channel)], caller: caller)
        let value = try #require(result.value, "subscribe failed: \(String(describing: result.error))")
        #expect(value["channel"] == .string(channel))
        return try #require(value["subscription"]?.stringValue)
    }

    func events(_ recorder: EventRecorder, _ subscription: String) -> [JSONValue] {
        recorder.matching { $0["subscription"]?.stringValue == subscription }
    }

    @Test func aTenantsChannelIsItsOwnInLocalMode() async throws {
        let recorder = EventRecorder()
        let engine = SyncEngine(configuration: SyncConfiguration(), emit: recorder.emit)
        let subA = try await subscribe(engine, "news", Self.a)
        let subB = try await subscribe(engine, "news", Self.b)
        let subOwner = try await subscribe(engine, "news", nil)

        let sent = await engine.perform(.broadcast, ["channel": "news", "event": "e", "data": "for a"], caller: Self.a)
        #expect(sent.value == ["sent": true, "channel": "news", "event": "e", "mode": "local"])
        _ = await engine.perform(.broadcast, ["channel": "news", "event": "e", "data": "for the owner"])
        #expect(events(recorder, subA).map { $0["data"] } == ["for a"])
        #expect(events(recorder, subA).first?["channel"] == "news")
        #expect(events(recorder, subB).isEmpty)
        #expect(events(recorder, subOwner).map { $0["data"] } == ["for the owner"])

        // Another tenant's subscription id is not found; the channel form removes only one's own.
        let foreign = await engine.perform(.unsubscribe, ["subscription": .string(subA)], caller: Self.b)
        #expect(foreign.error?.code == .subscriptionFailed)
        #expect(await engine.perform(.unsubscribe, ["subscription": .string(subA)]).error?.code == .subscriptionFailed)
        #expect(await engine.perform(.unsubscribe, ["channel": "news"], caller: Self.b).value?["count"] == 1)
        _ = await engine.perform(.broadcast, ["channel": "news", "event": "e", "data": "again"], caller: Self.a)
        #expect(events(recorder, subA).count == 2)
        #expect(await engine.perform(.unsubscribe, ["subscription": .string(subA)], caller: Self.a).value
            == ["unsubscribed": true, "channel": "news", "count": 1])
    }

    @Test func presenceIsPerTenantAndItsUserIsTheSubject() async throws {
        let recorder = EventRecorder()
        let engine = SyncEngine(configuration: SyncConfiguration(), emit: recorder.emit)
        let watchA = try await subscribe(engine, "lobby", Self.a)
        let joined = try #require(await engine.perform(.presence, ["channel": "lobby"], caller: Self.a).value)
        #expect(joined["userId"] == "alice")
        #expect(joined["channel"] == "lobby")
        #expect(joined["users"]?.arrayValue?.map { $0["userId"] } == ["alice"])
        let impostor = await engine.perform(.presence, ["channel": "lobby", "userId": "mallory"], caller: Self.a)
        #expect(impostor.error?.code == .forbidden)
        #expect(impostor.error?.retryable == false)
        #expect(await engine.perform(.presence, ["channel": "lobby", "userId": "bob"], caller: Self.b).value?["online"] == 1)
        _ = await engine.perform(.presence, ["channel": "lobby", "userId": "owner-user"])
        #expect(await engine.perform(.presence, ["channel": "lobby"], caller: Self.a).value?["users"]?.arrayValue?.map { $0["userId"] } == ["alice"])

        let seen = events(recorder, watchA)
        #expect(seen.map { $0["event"] } == ["presence.join"])
        #expect(seen.first?["channel"] == "lobby")
        #expect(seen.first?["data"]?["userId"] == "alice")

        #expect(await engine.perform(.leave, ["channel": "lobby", "userId": "bob"], caller: Self.a).error?.code == .forbidden)
        #expect(await engine.perform(.leave, ["channel": "lobby"], caller: Self.b).value == ["left": true, "channel": "lobby", "userId": "bob"])
        #expect(await engine.perform(.leave, ["channel": "lobby", "userId": "alice"], caller: Self.a).value?["left"] == true)
        #expect(events(recorder, watchA).map { $0["event"] } == ["presence.join", "presence.leave"])
    }

    @Test func keptChannelNamesRoundTripAndAreValidOnTheWire() {
        for tenant in ["tenant-a", "tenant b/é", "x"] {
            let scope = SyncScope(tenant: tenant)
            let kept = scope.keptChannel("news.room:1")
            #expect(SyncScope.visibleChannel(kept) == "news.room:1")
            #expect(SyncScope.isValidKeptChannel(kept))
            #expect(scope.owns(kept))
            #expect(!SyncScope.owner.owns(kept))
            #expect(!SyncScope(tenant: tenant + "2").owns(kept))
        }
        #expect(SyncScope.owner.keptChannel("news") == "news")
        #expect(SyncScope.owner.owns("news"))
        for bad in ["/news", "abc/news", "AB/news", "ab/", "ab/n ws", "ab/c/d"] { #expect(!SyncScope.isValidKeptChannel(bad), "\(bad)") }
    }

    /// Cluster mode: two engines are two processes sharing one PostgreSQL.
    @Test func aTenantsChannelIsItsOwnInClusterMode() async throws {
        let cluster = uniqueName("tenants")
        // Presence that outlives a loaded machine's pauses: this test is not about expiry.
        let config = try SyncTestEnvironment.clusterConfig(cluster: cluster, heartbeat: 1000, expiry: 30_000)
        let oneEvents = EventRecorder(), twoEvents = EventRecorder()
        let one = SyncEngine(configuration: config, emit: oneEvents.emit)
        let two = SyncEngine(configuration: config, emit: twoEvents.emit)
        defer { Task { await one.shutdown(); await two.shutdown() } }
        let channel = uniqueName("news")

        let aOnOne = try await subscribe(one, channel, Self.a)
        let bOnOne = try await subscribe(one, channel, Self.b)
        let ownerOnTwo = try await subscribe(two, channel, nil)
        #expect(one.cluster?.isConnected == true, "PostgreSQL at \(TestEnvironment.postgresURL) is unreachable")

        let sent = await two.perform(.broadcast, ["channel": .string(channel), "event": "e", "data": "for a"], caller: Self.a)
        #expect(sent.value?["mode"] == "cluster", "\(sent)")
        _ = await two.perform(.broadcast, ["channel": .string(channel), "event": "end", "data": "for b"], caller: Self.b)
        // One publisher's messages arrive in order: once b's has, a's has too.
        _ = await oneEvents.wait(for: 1) { $0["subscription"]?.stringValue == bOnOne }
        #expect(events(oneEvents, aOnOne).map { $0["data"] } == ["for a"])
        #expect(events(oneEvents, aOnOne).first?["channel"] == .string(channel))
        #expect(events(oneEvents, bOnOne).map { $0["data"] } == ["for b"])
        #expect(events(twoEvents, ownerOnTwo).isEmpty)

        // Presence rows are kept per tenant too.
        let alice = await one.perform(.presence, ["channel": .string(channel)], caller: Self.a)
        #expect(alice.value?["users"]?.arrayValue?.map { $0["userId"] } == ["alice"], "\(alice)")
        let bob = await two.perform(.presence, ["channel": .string(channel)], caller: Self.b)
        #expect(bob.value?["users"]?.arrayValue?.map { $0["userId"] } == ["bob"], "\(bob)")
        let joins = await oneEvents.wait(for: 1) { $0["subscription"]?.stringValue == bOnOne && $0["event"] == "presence.join" }
        #expect(joins.first?["data"]?["userId"] == "bob")
        #expect(joins.first?["channel"] == .string(channel))
        #expect(events(oneEvents, aOnOne).filter { $0["event"] == "presence.join" }.map { $0["data"]?["userId"] } == ["alice"])
    }
}
