import CSOPCore
import CSOPPostgres
import CSOPTestSupport
import Logging
import PostgresNIO
import Testing

@testable import SyncPlugin

/// Cluster mode in one process: each engine is a separate instance with its own PostgreSQL
/// connections, exactly as separate `csop` processes would be.
@Suite struct ClusterModeTests {
    let cluster = uniqueName("t")

    func makeEngine(url: String = TestEnvironment.postgresURL, extra: [(String, JSONValue)] = []) throws -> (SyncEngine, EventRecorder) {
        let recorder = EventRecorder()
        let config = try SyncTestEnvironment.clusterConfig(url: url, cluster: cluster, extra: extra)
        return (SyncEngine(configuration: config, emit: recorder.emit), recorder)
    }

    /// Subscribing waits for the first connection, so it also proves PostgreSQL is reachable.
    func subscribe(_ engine: SyncEngine, _ channel: String) async throws -> String {
        let result = await engine.perform(.subscribe, ["channel": .string(channel)])
        let value = try #require(result.value, "subscribe failed: \(String(describing: result.error))")
        #expect(engine.cluster?.isConnected == true, "PostgreSQL at \(TestEnvironment.postgresURL) is unreachable")
        return try #require(value["subscription"]?.stringValue)
    }

    @Test func broadcastsReachOtherInstancesOnceInPublishOrder() async throws {
        let (a, aEvents) = try makeEngine()
        let (b, bEvents) = try makeEngine()
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let channel = uniqueName("room")
        _ = try await subscribe(a, channel)
        _ = try await subscribe(b, channel)
        let count = 300
        var results: [Result<JSONValue, CSOPError>] = []
        for i in 0..<count {
            results.append(await b.perform(.broadcast, ["channel": .string(channel), "event": "n", "data": .int(Int64(i))]))
        }
        #expect(results.allSatisfy { $0.value?["mode"] == "cluster" })
        let remote = await aEvents.wait(for: count, onChannel(channel))
        #expect(remote.map { $0["data"] } == (0..<count).map { JSONValue.int(Int64($0)) })
        #expect(remote.allSatisfy { $0["origin"]?.stringValue == b.instanceID })
        let local = await bEvents.wait(for: count, onChannel(channel))
        #expect(local.map { $0["data"] } == (0..<count).map { JSONValue.int(Int64($0)) })
        // Nothing arrives twice (the publisher's own echo is skipped).
        _ = try #require(await b.perform(.broadcast, ["channel": .string(channel), "event": "end"]).value)
        _ = await aEvents.wait(for: 1, onChannel(channel, event: "end"))
        #expect(aEvents.matching(onChannel(channel)).count == count + 1)
        #expect(bEvents.matching(onChannel(channel)).count == count + 1)
    }

    /// Issue 10: a broadcast whose call was answered (timed out) before it went out is never
    /// sent, so `TIMEOUT` means "not delivered" — in cluster mode and in local mode.
    @Test func aBroadcastAnsweredBeforeItWasSentIsNeverDelivered() async throws {
        // Presence that outlives a loaded machine's pauses: this test is not about expiry.
        let (a, aEvents) = try makeEngine(extra: [("presenceExpiry", 60_000)])
        let (b, bEvents) = try makeEngine(extra: [("presenceExpiry", 60_000)])
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let channel = uniqueName("late")
        _ = try await subscribe(a, channel)
        _ = try await subscribe(b, channel)
        let dropped = await withCheckedContinuation { continuation in
            b.perform(.broadcast, ["channel": .string(channel), "event": "dropped"], commit: { false }) { continuation.resume(returning: $0) }
        }
        #expect(dropped.error?.code == .timeout, "\(dropped)")
        _ = try #require(await b.perform(.broadcast, ["channel": .string(channel), "event": "end"]).value)
        _ = await aEvents.wait(for: 1, onChannel(channel, event: "end"))
        _ = await bEvents.wait(for: 1, onChannel(channel, event: "end"))
        #expect(aEvents.matching(onChannel(channel, event: "dropped")).isEmpty)
        #expect(bEvents.matching(onChannel(channel, event: "dropped")).isEmpty)

        let recorder = EventRecorder()
        let local = SyncEngine(configuration: try SyncConfiguration(config: [:]), emit: recorder.emit)
        _ = try #require(await local.perform(.subscribe, ["channel": "solo"]).value)
        let refused = await withCheckedContinuation { continuation in
            local.perform(.broadcast, ["channel": "solo", "event": "dropped"], commit: { false }) { continuation.resume(returning: $0) }
        }
        #expect(refused.error?.code == .timeout)
        #expect(recorder.matching(onChannel("solo")).isEmpty)

        // Joins and leaves too, in both modes: nothing is written, nothing announced.
        for engine in [a, local] {
            let joined = await withCheckedContinuation { continuation in
                engine.perform(.presence, ["channel": .string(channel), "userId": "ghost"], commit: { false }) { continuation.resume(returning: $0) }
            }
            #expect(joined.error?.code == .timeout, "\(joined)")
            let users = try #require(await engine.perform(.presence, ["channel": .string(channel), "userId": "real"]).value)
            #expect(users["users"]?.arrayValue?.contains { $0["userId"] == "ghost" } == false, "\(users)")
            let left = await withCheckedContinuation { continuation in
                engine.perform(.leave, ["channel": .string(channel), "userId": "real"], commit: { false }) { continuation.resume(returning: $0) }
            }
            #expect(left.error?.code == .timeout)
            let still = try #require(await engine.perform(.presence, ["channel": .string(channel), "userId": "real"]).value)
            #expect(still["users"]?.arrayValue?.contains { $0["userId"] == "real" } == true, "\(still)")
        }
    }

    @Test func concurrentPublishersKeepTheirOwnOrder() async throws {
        let (a, aEvents) = try makeEngine()
        let (b, _) = try makeEngine()
        let (c, _) = try makeEngine()
        defer { Task { await a.shutdown(); await b.shutdown(); await c.shutdown() } }
        let channel = uniqueName("mix")
        _ = try await subscribe(a, channel)
        _ = try await subscribe(b, channel)
        _ = try await subscribe(c, channel)
        async let fromB: Void = publish(b, channel, count: 100)
        async let fromC: Void = publish(c, channel, count: 100)
        _ = await (fromB, fromC)
        let events = await aEvents.wait(for: 200, onChannel(channel))
        for origin in [b.instanceID, c.instanceID] {
            let mine = events.filter { $0["origin"]?.stringValue == origin }.map { $0["data"] }
            #expect(mine == (0..<100).map { JSONValue.int(Int64($0)) })
        }
    }

    func publish(_ engine: SyncEngine, _ channel: String, count: Int) async {
        for i in 0..<count {
            let r = await engine.perform(.broadcast, ["channel": .string(channel), "event": "n", "data": .int(Int64(i))])
            #expect(r.value != nil)
        }
    }

    @Test func payloadsLargerThanNotifyLimitArriveWhole() async throws {
        let (a, aEvents) = try makeEngine(extra: [("maxPayloadBytes", 600_000)])
        let (b, _) = try makeEngine(extra: [("maxPayloadBytes", 600_000)])
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let channel = uniqueName("big")
        _ = try await subscribe(a, channel)
        let text = String(repeating: "0123456789abcdéf", count: 30_000)
        let big: JSONValue = ["blob": .string(text), "list": .array((0..<1000).map { .int($0) })]
        _ = try #require(await b.perform(.broadcast, ["channel": .string(channel), "event": "big", "data": big]).value)
        _ = try #require(await b.perform(.broadcast, ["channel": .string(channel), "event": "small", "data": 1]).value)
        let events = await aEvents.wait(for: 2, onChannel(channel))
        #expect(events.map { $0["event"] } == ["big", "small"])
        #expect(events.first?["data"] == big)
        let tooBig = await b.perform(
            .broadcast, ["channel": .string(channel), "event": "big", "data": .string(String(repeating: "x", count: 600_000))])
        #expect(tooBig.error?.code == .invalidPayload)
    }

    @Test func presenceJoinAndLeaveAreSharedAndAnnouncedOnce() async throws {
        // A long expiry: on a loaded machine a short one can lapse between a write and a read.
        let (a, aEvents) = try makeEngine(extra: [("presenceExpiry", 60_000)])
        let (b, bEvents) = try makeEngine(extra: [("presenceExpiry", 60_000)])
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let channel = uniqueName("lobby")
        _ = try await subscribe(a, channel)
        _ = try await subscribe(b, channel)
        let joined = try #require(
            await b.perform(.presence, ["channel": .string(channel), "userId": "bob", "metadata": ["mood": "ok"]]).value)
        #expect(joined["online"] == 1)
        #expect(joined["users"]?.arrayValue?.first?["mood"] == "ok")
        // Tracking again only refreshes; a second instance sees the same list.
        _ = try #require(await b.perform(.presence, ["channel": .string(channel), "userId": "bob"]).value)
        let seen = try #require(await a.perform(.presence, ["channel": .string(channel), "userId": "amy"]).value)
        #expect(seen["online"] == 2)
        #expect(Set(seen["users"]?.arrayValue?.compactMap { $0["userId"]?.stringValue } ?? []) == ["amy", "bob"])

        let joins = await aEvents.wait(for: 2, onChannel(channel, event: "presence.join"))
        #expect(joins.compactMap { $0["data"]?["userId"]?.stringValue }.sorted() == ["amy", "bob"])
        _ = await bEvents.wait(for: 2, onChannel(channel, event: "presence.join"))

        #expect(try #require(await a.perform(.leave, ["channel": .string(channel), "userId": "bob"]).value)["left"] == true)
        #expect(try #require(await b.perform(.leave, ["channel": .string(channel), "userId": "bob"]).value)["left"] == false)
        let leaves = await bEvents.wait(for: 1, onChannel(channel, event: "presence.leave"))
        #expect(leaves.first?["data"] == ["userId": "bob", "reason": "left"])
        // One more broadcast as a marker: everything before it has arrived.
        _ = try #require(await a.perform(.broadcast, ["channel": .string(channel), "event": "marker"]).value)
        _ = await bEvents.wait(for: 1, onChannel(channel, event: "marker"))
        #expect(bEvents.matching(onChannel(channel, event: "presence.join")).count == 2)
        #expect(bEvents.matching(onChannel(channel, event: "presence.leave")).count == 1)
    }

    @Test func anInstanceThatVanishesHasItsUsersExpired() async throws {
        // An expiry that a loaded machine's pauses (a second and more in a full run) do not
        // reach, so only b's users, which nobody refreshes, expire.
        let timing: [(String, JSONValue)] = [("heartbeatInterval", 500), ("presenceExpiry", 4000)]
        let (a, aEvents) = try makeEngine(extra: timing)
        let (b, _) = try makeEngine(extra: timing)
        defer { Task { await a.shutdown() } }
        let channel = uniqueName("crash")
        _ = try await subscribe(a, channel)
        _ = try #require(await b.perform(.presence, ["channel": .string(channel), "userId": "carl"]).value)
        _ = try #require(await a.perform(.presence, ["channel": .string(channel), "userId": "ann"]).value)
        await b.shutdown(goodbye: false)
        let leaves = await aEvents.wait(for: 1, onChannel(channel, event: "presence.leave"))
        #expect(leaves.first?["data"] == ["userId": "carl", "reason": "expired"])
        let now = try #require(await a.perform(.presence, ["channel": .string(channel), "userId": "ann"]).value)
        #expect(now["users"]?.arrayValue?.compactMap { $0["userId"]?.stringValue } == ["ann"])
        // ann keeps heartbeating: still there several expiry periods later.
        _ = try #require(await a.perform(.broadcast, ["channel": .string(channel), "event": "marker"]).value)
        try await Task.sleep(for: .milliseconds(5000))
        let later = try #require(await a.perform(.presence, ["channel": .string(channel), "userId": "ann"]).value)
        #expect(later["online"] == 1)
        #expect(aEvents.matching(onChannel(channel, event: "presence.leave")).count == 1)
    }

    @Test func gracefulShutdownSaysGoodbye() async throws {
        // A long expiry: on a loaded machine a short one could expire dora before her goodbye.
        let (a, aEvents) = try makeEngine(extra: [("presenceExpiry", 60_000)])
        let (b, _) = try makeEngine(extra: [("presenceExpiry", 60_000)])
        defer { Task { await a.shutdown() } }
        let channel = uniqueName("bye")
        _ = try await subscribe(a, channel)
        _ = try #require(await b.perform(.presence, ["channel": .string(channel), "userId": "dora"]).value)
        await b.shutdown(goodbye: true)
        let leaves = await aEvents.wait(for: 1, onChannel(channel, event: "presence.leave"))
        #expect(leaves.first?["data"] == ["userId": "dora", "reason": "shutdown"])
        let after = await b.perform(.broadcast, ["channel": .string(channel), "event": "x"])
        #expect(after.error?.code == .notInitialized)
    }

    @Test func unreachableDatabaseFailsBroadcastsRetryably() async throws {
        let (engine, _) = try makeEngine(url: "postgres://csop:csop@127.0.0.1:1/none", extra: [("connectTimeout", 500)])
        defer { Task { await engine.shutdown() } }
        let sent = await engine.perform(.broadcast, ["event": "lost"])
        let error = try #require(sent.error)
        #expect(error.code == .notConnected)
        #expect(error.retryable)
        #expect(!error.message.contains("csop:csop"))
        // A channel with history needs the database to know where the subscription starts;
        // one without still subscribes locally, and resumes once the database is back.
        let kept = await engine.perform(.subscribe, [:]).error
        #expect(kept?.code == .notConnected && kept?.retryable == true)
        let (plain, _) = try makeEngine(
            url: "postgres://csop:csop@127.0.0.1:1/none", extra: [("connectTimeout", 500), ("history", ["size": 0])])
        defer { Task { await plain.shutdown() } }
        #expect(await plain.perform(.subscribe, [:]).value?["subscribed"] == true)
        #expect(await engine.perform(.presence, [:]).error?.code == .notConnected)
    }

    @Test func killedSessionsReconnectAndSubscriptionsResume() async throws {
        let (a, aEvents) = try makeEngine()
        let (b, _) = try makeEngine()
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let channel = uniqueName("kill")
        _ = try await subscribe(a, channel)
        let admin = try await PostgresTestConnection.open()
        try await admin.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = \(a.cluster!.applicationName)",
            logger: PostgresTestConnection.logger)
        try await admin.close()
        try await expectDeliveryResumes(from: b, to: aEvents, channel: channel)
    }

    @Test func databaseRestartIsSurvived() async throws {
        let server = try await PrivatePostgres.make()
        defer { server.destroy() }
        let (a, aEvents) = try makeEngine(url: server.url)
        let (b, _) = try makeEngine(url: server.url)
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let channel = uniqueName("restart")
        _ = try await subscribe(a, channel)
        _ = try await subscribe(b, channel)
        _ = try #require(await b.perform(.broadcast, ["channel": .string(channel), "event": "before"]).value)
        _ = await aEvents.wait(for: 1, onChannel(channel, event: "before"))

        try await server.stop()
        // While the database is down, broadcasts fail retryably instead of vanishing.
        var failure: CSOPError?
        for _ in 0..<2000 where failure == nil {
            failure = await b.perform(.broadcast, ["channel": .string(channel), "event": "down"]).error
            if failure == nil { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(failure?.code == .notConnected)
        #expect(failure?.retryable == true)
        try await server.start()
        try await expectDeliveryResumes(from: b, to: aEvents, channel: channel)
    }

    /// Broadcasts until one succeeds, then checks the other instance receives the next one.
    func expectDeliveryResumes(from sender: SyncEngine, to events: EventRecorder, channel: String) async throws {
        var sent = false
        for _ in 0..<3000 where !sent {
            sent = await sender.perform(.broadcast, ["channel": .string(channel), "event": "probe"]).value != nil
            if !sent { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(sent)
        // The receiver may still be reconnecting: keep publishing until one arrives.
        var received = false
        for i in 0..<600 where !received {
            _ = await sender.perform(.broadcast, ["channel": .string(channel), "event": "after", "data": .int(Int64(i))])
            received = !(await events.wait(for: 1, seconds: 0, onChannel(channel, event: "after"))).isEmpty
            if !received { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(received)
    }
}
