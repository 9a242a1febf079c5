import CSOPCore
import CSOPTestSupport
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

    init(url: String) throws {
        directory = try TemporaryDirectory("csop-sync")
        let config: JSONObject = [
            "postgresUrl": .string(url), "clusterChannel": .string(cluster), "heartbeatInterval": 200,
            "presenceExpiry": 1500, "reconnectMaxDelay": 200, "maxPayloadBytes": 200_000,
        ]
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
}
