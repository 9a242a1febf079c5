import CSOPCore
import CSOPTestSupport
import Foundation
import Testing

@testable import SyncPlugin

/// Cluster mode across real `csop run` processes sharing one PostgreSQL.
@Suite struct MultiProcessTests {
    let directory: TemporaryDirectory
    let plugins: String
    let cluster = uniqueName("mp")

    init() throws {
        try self.init(url: TestEnvironment.postgresURL)
    }

    init(url: String, history: JSONValue? = nil) throws {
        directory = try TemporaryDirectory("csop-sync")
        var config: JSONObject = [
            "postgresUrl": .string(url), "clusterChannel": .string(cluster), "heartbeatInterval": 200,
            "presenceExpiry": 1500, "reconnectMaxDelay": 200, "maxPayloadBytes": 200_000,
        ]
        if let history { config["history"] = history }
        plugins = try directory.writePlugins([PluginEntry("50-sync.conf", library: "libcsop-sync.so", config: config)])
    }

    func start() throws -> RunProcess { try RunProcess(pluginsDirectory: plugins) }

    func ok(_ process: RunProcess, _ id: String, _ action: String, _ payload: JSONValue) async throws -> JSONValue {
        let response = try #require(try await process.call(id, action, payload, timeout: 30), "no response to \(action)")
        #expect(response["status"] == "ok", "\(action) failed: \(response.jsonString)")
        return response["data"] ?? .null
    }

    func events(_ process: RunProcess, _ channel: String, _ event: String? = nil) -> [JSONValue] {
        process.received.filter { $0["type"] == "event" && onChannel(channel, event: event)($0) }
    }

    func waitForEvents(_ process: RunProcess, _ channel: String, _ event: String? = nil, count: Int) async -> [JSONValue] {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        while events(process, channel, event).count < count, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return events(process, channel, event)
    }

    @Test func broadcastsCrossProcessesInOrderOnceAndWhole() async throws {
        let a = try start()
        let b = try start()
        let channel = uniqueName("room")
        _ = try await ok(a, "s1", "sync.subscribe", ["channel": .string(channel)])
        _ = try await ok(b, "s1", "sync.subscribe", ["channel": .string(channel)])
        let count = 200
        for i in 0..<count {
            try b.send(["id": .string("b\(i)"), "action": "sync.broadcast", "payload": ["channel": .string(channel), "event": "n", "data": .int(Int64(i))]])
        }
        let big: JSONValue = ["text": .string(String(repeating: "ünïcode-", count: 12_000))]
        let sent = try await ok(b, "big", "sync.broadcast", ["channel": .string(channel), "event": "big", "data": big])
        #expect(sent["mode"] == "cluster")
        let received = await waitForEvents(a, channel, count: count + 1)
        #expect(received.prefix(count).map { $0["data"] } == (0..<count).map { JSONValue.int(Int64($0)) })
        #expect(received.last?["data"] == big)
        #expect(received.count == count + 1)
        // The publisher's own subscriber gets each message exactly once as well.
        let own = await waitForEvents(b, channel, count: count + 1)
        #expect(own.count == count + 1)
        let tooBig = try #require(
            try await b.call("huge", "sync.broadcast", ["channel": .string(channel), "event": "x", "data": .string(String(repeating: "y", count: 200_001))]))
        #expect(tooBig["error"]?["code"] == "INVALID_PAYLOAD")
        #expect(await a.finish() == 0)
        #expect(await b.finish() == 0)
    }

    @Test func presenceJoinsLeavesAndExpiresAKilledProcessesUsers() async throws {
        let a = try start()
        let b = try start()
        let c = try start()
        let channel = uniqueName("lobby")
        _ = try await ok(a, "s", "sync.subscribe", ["channel": .string(channel)])
        let joined = try await ok(b, "p1", "sync.presence", ["channel": .string(channel), "userId": "bob", "metadata": ["role": "host"]])
        #expect(joined["online"] == 1)
        _ = try await ok(c, "p2", "sync.presence", ["channel": .string(channel), "userId": "cat"])
        let joins = await waitForEvents(a, channel, "presence.join", count: 2)
        #expect(joins.compactMap { $0["data"]?["userId"]?.stringValue }.sorted() == ["bob", "cat"])
        #expect(joins.first { $0["data"]?["userId"] == "bob" }?["data"]?["role"] == "host")
        let listed = try await ok(a, "p3", "sync.presence", ["channel": .string(channel), "userId": "amy"])
        #expect(listed["online"] == 3)

        _ = try await ok(c, "l1", "sync.leave", ["channel": .string(channel), "userId": "cat"])
        b.kill()
        _ = await b.waitForExit()
        let leaves = await waitForEvents(a, channel, "presence.leave", count: 2)
        #expect(leaves.compactMap { $0["data"] } == [["userId": "cat", "reason": "left"], ["userId": "bob", "reason": "expired"]])
        let after = try await ok(a, "p4", "sync.presence", ["channel": .string(channel), "userId": "amy"])
        #expect(after["users"]?.arrayValue?.compactMap { $0["userId"]?.stringValue } == ["amy"])
        // Exiting cleanly says goodbye for c's users (none left) and a's user amy.
        #expect(await c.finish() == 0)
        #expect(await a.finish() == 0)
        #expect(events(a, channel, "presence.leave").count == 2)
    }

    @Test func subscriptionsSurviveADatabaseRestart() async throws {
        let server = try await PrivatePostgres.make()
        defer { server.destroy() }
        let suite = try MultiProcessTests(url: server.url)
        let a = try suite.start()
        let b = try suite.start()
        let channel = uniqueName("restart")
        _ = try await suite.ok(a, "s", "sync.subscribe", ["channel": .string(channel)])
        _ = try await suite.ok(b, "w", "sync.broadcast", ["channel": .string(channel), "event": "before"])
        #expect(await suite.waitForEvents(a, channel, "before", count: 1).count == 1)
        try await server.restart()
        var delivered = false
        for i in 0..<400 where !delivered {
            let response = try await b.call("r\(i)", "sync.broadcast", ["channel": .string(channel), "event": "after"], timeout: 30)
            if response?["status"] != "ok" {
                #expect(response?["error"]?["code"] == "NOT_CONNECTED")
                #expect(response?["error"]?["retry"] == true)
            }
            delivered = !suite.events(a, channel, "after").isEmpty
            if !delivered { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(delivered)
        let exits = (await a.finish(), await b.finish())
        #expect(exits.0 == 0 && exits.1 == 0, "exit statuses \(String(describing: exits))")
    }

    /// The bar of issue 15: a publisher sends 10,000 messages while the subscriber's process is
    /// killed -9 and restarted, and PostgreSQL is restarted once. The subscriber, resubscribing
    /// with the last offset it saw, gets all 10,000 exactly once and in order, between its two
    /// lives; what was published while its second life was reconnecting is read from the
    /// history without being asked.
    @Test func tenThousandMessagesArriveOnceInOrderThroughAKillAndADatabaseRestart() async throws {
        let server = try await PrivatePostgres.make()
        defer { server.destroy() }
        let suite = try MultiProcessTests(url: server.url, history: ["size": 20_000, "age": 600_000])
        let channel = uniqueName("bar")
        let publisher = try suite.start()
        let first = try suite.start()
        let subscribed = try await suite.ok(first, "s", "sync.subscribe", ["channel": .string(channel)])
        let epoch = try #require(subscribed["epoch"]?.stringValue)
        #expect(subscribed["offset"] == 0)

        /// (offset, data) of the `n` events a process printed.
        func events(_ process: RunProcess) -> [(offset: Int64, data: Int64)] {
            process.received.filter { $0["type"] == "event" && $0["event"] == "n" }.map {
                ($0["offset"]?.int64Value ?? -1, $0["data"]?.int64Value ?? -1)
            }
        }
        let clock = ContinuousClock()
        /// Publishes `range` in windows of 250 in flight; every broadcast is answered ok.
        func publish(_ range: Range<Int>) async throws {
            for start in stride(from: range.lowerBound, to: range.upperBound, by: 250) {
                let window = start..<min(start + 250, range.upperBound)
                for i in window {
                    try publisher.send([
                        "id": .string("p\(i)"), "action": "sync.broadcast", "options": ["timeout": 60_000],
                        "payload": ["channel": .string(channel), "event": "n", "data": .int(Int64(i))],
                    ])
                }
                let deadline = clock.now + .seconds(120)
                var answers: [JSONValue] = []
                repeat {
                    try await Task.sleep(for: .milliseconds(5))
                    answers = publisher.received.filter { $0["id"]?.stringValue?.hasPrefix("p") == true }
                } while answers.count < window.upperBound && clock.now < deadline
                let failed = answers.filter { $0["status"] != "ok" }
                try #require(failed.isEmpty && answers.count == window.upperBound, "broadcasts failed: \(failed.prefix(3))")
            }
        }

        try await publish(0..<3000)
        first.kill(SIGKILL)
        _ = await first.waitForExit()
        let before = events(first)
        let last = before.last?.offset ?? 0
        try await publish(3000..<5000)

        let second = try suite.start()
        let resumed = try await suite.ok(second, "s", "sync.subscribe", ["channel": .string(channel), "since": ["offset": .int(last), "epoch": .string(epoch)]])
        #expect(resumed["recovered"] == true, "\(resumed)")
        try await publish(5000..<7000)

        try await server.restart()
        var ready = false
        for i in 0..<2000 where !ready {
            ready = try await publisher.call("h\(i)", "sync.health", [:], timeout: 30)?["data"]?["ready"] == true
            if !ready { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(ready, "the publisher never reconnected")
        try await publish(7000..<10_000)

        let deadline = clock.now + .seconds(120)
        while events(second).last?.offset ?? 0 < 10_000, clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let after = events(second)
        let all = before + after
        #expect(all.count == 10_000, "\(before.count) before the kill, \(after.count) after")
        #expect(all.map(\.offset) == (1...10_000).map { Int64($0) }, "offsets in order, each once")
        #expect(all.map(\.data) == (0..<10_000).map { Int64($0) }, "messages in publish order, each once")
        #expect(second.received.filter { $0["event"] == "sync.recovery" }.isEmpty)
        #expect(await second.finish() == 0)
        #expect(await publisher.finish() == 0)
    }
}
