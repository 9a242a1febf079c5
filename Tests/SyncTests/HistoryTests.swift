import CSOPCore
import CSOPTestSupport
import Testing

@testable import SyncPlugin

/// Channel history: offsets and epochs on events, `since` on subscribe (backlog first, then
/// live, nothing twice at the seam), `sync.history`, and recovery after a lost connection.
@Suite struct HistoryTests {
    static let tenant = Caller(subject: "tia", tenant: "tenant-t", actions: .all)

    func localEngine(_ history: JSONValue) throws -> (SyncEngine, EventRecorder) {
        let recorder = EventRecorder()
        let config = try SyncConfiguration(config: ["history": history], environment: { _ in nil })
        return (SyncEngine(configuration: config, emit: recorder.emit), recorder)
    }

    func clusterEngine(_ cluster: String, history: JSONValue? = nil) throws -> (SyncEngine, EventRecorder) {
        let recorder = EventRecorder()
        var extra: [(String, JSONValue)] = []
        if let history { extra.append(("history", history)) }
        let config = try SyncTestEnvironment.clusterConfig(cluster: cluster, heartbeat: 1000, expiry: 30_000, extra: extra)
        return (SyncEngine(configuration: config, emit: recorder.emit), recorder)
    }

    func subscribe(_ engine: SyncEngine, _ channel: String, since: (Int64, String)? = nil, caller: Caller? = nil) async throws -> JSONValue {
        var payload: JSONObject = ["channel": .string(channel)]
        if let since { payload["since"] = ["offset": .int(since.0), "epoch": .string(since.1)] }
        let result = await engine.perform(.subscribe, .object(payload), caller: caller)
        return try #require(result.value, "subscribe failed: \(String(describing: result.error))")
    }

    func broadcast(_ engine: SyncEngine, _ channel: String, _ values: Range<Int>, caller: Caller? = nil) async {
        for i in values {
            let sent = await engine.perform(.broadcast, ["channel": .string(channel), "event": "n", "data": .int(Int64(i))], caller: caller)
            #expect(sent.value != nil, "broadcast \(i): \(String(describing: sent.error))")
        }
    }

    /// (offset, data) of a subscription's `n` events, in arrival order.
    func received(_ recorder: EventRecorder, _ subscription: JSONValue) -> [(Int64, Int64)] {
        recorder.matching { $0["subscription"] == subscription["subscription"] && $0["event"] == "n" }.map {
            ($0["offset"]?.int64Value ?? -1, $0["data"]?.int64Value ?? -1)
        }
    }

    @Test func localHistoryRecoversFromAnOffsetOnceAndInOrder() async throws {
        let (engine, recorder) = try localEngine(["size": 5])
        await broadcast(engine, "room", 0..<3)
        // Each event carries its offset and the stream's epoch.
        let first = try await subscribe(engine, "room", since: (0, ""))
        #expect(first["recovered"] == true)
        #expect(first["offset"] == 3)
        let epoch = try #require(first["epoch"]?.stringValue)
        #expect(received(recorder, first).map(\.0) == [1, 2, 3])
        #expect(received(recorder, first).map(\.1) == [0, 1, 2])
        #expect(recorder.all.allSatisfy { $0["epoch"] == .string(epoch) })

        // From offset 1: 2 and 3 first, then live ones: nothing twice at the seam.
        let second = try await subscribe(engine, "room", since: (1, epoch))
        await broadcast(engine, "room", 3..<5)
        #expect(received(recorder, second).map(\.0) == [2, 3, 4, 5])
        #expect(received(recorder, first).map(\.0) == [1, 2, 3, 4, 5])

        // Up to date: recovered with nothing to replay.
        let current = try await subscribe(engine, "room", since: (5, epoch))
        #expect(current["recovered"] == true)
        #expect(received(recorder, current).isEmpty)

        // Size 5 keeps offsets 3–7 after two more: offset 1 can no longer be continued.
        await broadcast(engine, "room", 5..<7)
        let late = try await subscribe(engine, "room", since: (1, epoch))
        #expect(late["recovered"] == false)
        #expect(received(recorder, late).isEmpty)
        let other = try await subscribe(engine, "room", since: (2, "0123abcd"))
        #expect(other["recovered"] == false, "another epoch (a restarted process) is not this stream")
        let future = try await subscribe(engine, "room", since: (99, epoch))
        #expect(future["recovered"] == false)

        // sync.history: the newest `limit`, or what follows `since`.
        let newest = try #require(await engine.perform(.history, ["channel": "room", "limit": 2]).value)
        #expect(newest["messages"]?.arrayValue?.map { $0["offset"] } == [6, 7])
        #expect(newest["offset"] == 7 && newest["epoch"] == .string(epoch))
        let after = try #require(await engine.perform(.history, ["channel": "room", "since": ["offset": 4, "epoch": .string(epoch)]]).value)
        #expect(after["messages"]?.arrayValue?.map { $0["data"] } == [4, 5, 6])
        #expect(after["recovered"] == true)
        let gone = try #require(await engine.perform(.history, ["channel": "room", "since": ["offset": 0, "epoch": .string(epoch)]]).value)
        #expect(gone["recovered"] == false)
        #expect(gone["messages"]?.arrayValue?.first?["offset"] == 3)
    }

    @Test func historyFollowsTheChannelRulesAndTenants() async throws {
        let (engine, recorder) = try localEngine(["size": 0, "channels": [["prefix": "keep.", "size": 2]]])
        await broadcast(engine, "keep.a", 0..<3)
        await broadcast(engine, "other", 0..<3)
        let epoch = try #require(await engine.perform(.history, ["channel": "keep.a"]).value?["epoch"]?.stringValue)
        let kept = try await subscribe(engine, "keep.a", since: (1, epoch))
        #expect(kept["recovered"] == true)
        #expect(received(recorder, kept).map(\.1) == [1, 2])
        // A channel without history: a since cannot be honoured, and events carry no offset.
        let plain = try await subscribe(engine, "other", since: (0, ""))
        #expect(plain["recovered"] == false)
        #expect(plain["epoch"] == nil)
        await broadcast(engine, "other", 3..<4)
        #expect(received(recorder, plain).map(\.0) == [-1])
        let refused = await engine.perform(.history, ["channel": "other"])
        #expect(refused.error?.code == .invalidPayload)
        #expect(refused.error?.message.contains("config.history") == true)

        // A tenant's keep.a is its own stream: the owner's messages are not in it.
        let theirs = try #require(await engine.perform(.history, ["channel": "keep.a"], caller: Self.tenant).value)
        #expect(theirs["messages"]?.arrayValue?.isEmpty == true)
        await broadcast(engine, "keep.a", 10..<11, caller: Self.tenant)
        let again = try #require(await engine.perform(.history, ["channel": "keep.a"], caller: Self.tenant).value)
        #expect(again["messages"]?.arrayValue?.map { $0["data"] } == [10])
        #expect(again["channel"] == "keep.a")
    }

    @Test func badHistoryInputIsRefusedWithTheFieldNamed() async throws {
        for (history, says) in [
            (["size": -1] as JSONValue, "config.history.size"), (["age": 0], "config.history.age"), (["depth": 1], "config.history"),
            (["channels": [["size": 3]]], "config.history.channels[0].prefix"),
            (["channels": [["prefix": "a"], ["prefix": "a"]]], "given twice"), ("yes", "config.history"),
        ] {
            #expect(throws: CSOPError.self, "\(history)") { _ = try SyncConfiguration(config: ["history": history], environment: { _ in nil }) }
            do {
                _ = try SyncConfiguration(config: ["history": history], environment: { _ in nil })
            } catch {
                #expect(error.code == .invalidPayload)
                #expect(error.message.contains(says), "\(error.message) should name \(says)")
            }
        }
        let (engine, _) = try localEngine(["size": 10])
        for (payload, says) in [
            (["since": 3] as JSONValue, "payload.since"), (["since": ["offset": 1]], "payload.since.epoch"),
            (["since": ["offset": -1, "epoch": ""]], "payload.since.offset"), (["since": ["offset": 1, "epoch": "Z!"]], "payload.since.epoch"),
            (["since": ["offset": 1, "epoch": "", "x": 1]], "payload.since"),
        ] {
            for operation in [SyncEngine.Operation.subscribe, .history] {
                let error = await engine.perform(operation, payload).error
                #expect(error?.code == .invalidPayload, "\(operation) \(payload)")
                #expect(error?.message.contains(says) == true, "\(error?.message ?? "no error") should name \(says)")
            }
        }
        for limit: JSONValue in [0, 1001, "5"] {
            #expect(await engine.perform(.history, ["limit": limit]).error?.code == .invalidPayload)
        }
        let reserved = await engine.perform(.broadcast, ["event": "sync.recovery"])
        #expect(reserved.error?.code == .invalidPayload)
    }

    @Test func clusterSubscribersGetEveryOffsetOnceAcrossTheSeam() async throws {
        let cluster = uniqueName("hist")
        let (a, aEvents) = try clusterEngine(cluster)
        let (b, _) = try clusterEngine(cluster)
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let channel = uniqueName("feed")
        let live = try await subscribe(a, channel)
        #expect(live["offset"] == 0)
        let epoch = try #require(live["epoch"]?.stringValue)
        await broadcast(b, channel, 0..<99)
        // The answer says where the message is.
        let sent = try #require(await b.perform(.broadcast, ["channel": .string(channel), "event": "n", "data": 99]).value)
        #expect(sent["offset"] == 100 && sent["epoch"] == .string(epoch), "\(sent)")
        // While b keeps publishing, a second subscription starts from offset 40.
        async let more: Void = broadcast(b, channel, 100..<300)
        let resumed = try await subscribe(a, channel, since: (40, epoch))
        await more
        #expect(resumed["recovered"] == true)
        _ = await aEvents.wait(for: 300 + 260) { $0["event"] == "n" }
        let all = received(aEvents, live)
        #expect(all.map(\.0) == (1...300).map { Int64($0) })
        #expect(all.map(\.1) == (0..<300).map { Int64($0) })
        let fromForty = received(aEvents, resumed)
        #expect(fromForty.map(\.0) == (41...300).map { Int64($0) }, "\(fromForty.prefix(5)) … \(fromForty.count)")
        // A third instance replays all of it from offset 0, in publish order.
        let (c, cEvents) = try clusterEngine(cluster)
        defer { Task { await c.shutdown() } }
        let replay = try await subscribe(c, channel, since: (0, epoch))
        #expect(replay["recovered"] == true)
        _ = await cEvents.wait(for: 300) { $0["event"] == "n" }
        #expect(received(cEvents, replay).map(\.1) == (0..<300).map { Int64($0) })
        let history = try #require(await c.perform(.history, ["channel": .string(channel), "limit": 3]).value)
        #expect(history["messages"]?.arrayValue?.map { $0["data"] } == [297, 298, 299])
    }

    @Test func aLostConnectionIsCaughtUpFromTheTable() async throws {
        let cluster = uniqueName("hist")
        let (a, aEvents) = try clusterEngine(cluster)
        let (b, _) = try clusterEngine(cluster)
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let channel = uniqueName("gap")
        let subscription = try await subscribe(a, channel)
        await broadcast(b, channel, 0..<10)
        _ = await aEvents.wait(for: 10) { $0["event"] == "n" }
        // a's sessions die; b publishes while a is away; a reads what it missed on reconnect.
        // A round in which a was back before b finished proves nothing: it is run again.
        var published = 10
        var missed = false
        for _ in 0..<5 where !missed {
            let admin = try await PostgresTestConnection.open()
            try await admin.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = \(a.cluster!.applicationName)",
                logger: PostgresTestConnection.logger)
            try await admin.close()
            for _ in 0..<2000 where a.cluster?.isConnected == true { try await Task.sleep(for: .milliseconds(2)) }
            await withTaskGroup(of: Void.self) { group in
                for i in published..<(published + 20) {
                    group.addTask { _ = await b.perform(.broadcast, ["channel": .string(channel), "event": "n", "data": .int(Int64(i))]) }
                }
            }
            published += 20
            missed = a.cluster?.isConnected == false
            _ = await aEvents.wait(for: published) { $0["event"] == "n" }
        }
        #expect(missed, "a was never away while b published")
        let got = received(aEvents, subscription)
        #expect(got.map(\.0) == (1...Int64(published)).map { $0 }, "\(got.count) events")
        #expect(Set(got.map(\.1)) == Set((0..<Int64(published)).map { $0 }))
        #expect((a.cluster?.follower?.recovered.load(ordering: .relaxed) ?? 0) > 0, "nothing was read back from the table")
        #expect(aEvents.matching { $0["event"] == "sync.recovery" }.isEmpty)
    }

    @Test func aGapTheHistoryNoLongerHoldsIsAnnounced() async throws {
        let cluster = uniqueName("hist")
        let (a, aEvents) = try clusterEngine(cluster, history: ["size": 3])
        defer { Task { await a.shutdown() } }
        let channel = uniqueName("trim")
        let subscription = try await subscribe(a, channel)
        let epoch = try #require(subscription["epoch"]?.stringValue)
        // Another instance's ten messages, of which the history still holds only 8–10, and the
        // history frame that says the channel reaches 10: a finds 1–7 gone for good.
        let admin = try await PostgresTestConnection.open()
        try await admin.query(
            "UPDATE csop_sync_streams SET top = 10 WHERE cluster = \(cluster) AND channel = \(channel)", logger: PostgresTestConnection.logger)
        try await admin.query(
            """
            INSERT INTO csop_sync_history (cluster, channel, off, event, data, stamp, origin, expires_at)
            SELECT \(cluster), \(channel), g, 'n', '{"i":' || (g - 1) || '}', 5, 'other', now() + interval '1 hour'
            FROM generate_series(8, 10) AS g
            """, logger: PostgresTestConnection.logger)
        try await admin.query("SELECT pg_notify(\(cluster), \("Hother\n\(channel) \(epoch) 10"))", logger: PostgresTestConnection.logger)
        try await admin.close()
        let notices = await aEvents.wait(for: 1) { $0["event"] == "sync.recovery" }
        _ = await aEvents.wait(for: 3) { $0["event"] == "n" }
        #expect(notices.first?["data"]?["recovered"] == false)
        #expect(notices.first?["data"]?["offset"] == 7)
        #expect(notices.first?["subscription"] == subscription["subscription"])
        let got = aEvents.matching { $0["subscription"] == subscription["subscription"] && $0["event"] == "n" }
        #expect(got.map { $0["offset"] } == [8, 9, 10])
        #expect(got.map { $0["data"]?["i"] } == [7, 8, 9])
    }
}
