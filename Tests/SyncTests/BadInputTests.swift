import CSOPCore
import Testing

@testable import SyncPlugin

@Suite struct BadInputTests {
    let engine = SyncEngine(configuration: SyncConfiguration(), emit: { _ in })

    func error(_ operation: SyncEngine.Operation, _ payload: JSONValue) async -> CSOPError? {
        await engine.perform(operation, payload).error
    }

    @Test(arguments: [
        JSONValue.string(""), .string(String(repeating: "c", count: 129)), .string("has space"), .string("ümlaut"),
        .int(3), .array([]),
    ])
    func badChannelNamesAreChannelErrors(channel: JSONValue) async throws {
        for operation in [SyncEngine.Operation.broadcast, .subscribe, .presence] {
            var payload: JSONObject = ["channel": channel]
            if operation == .broadcast { payload["event"] = "e" }
            let failure = try #require(await error(operation, .object(payload)))
            #expect(failure.code == .channelError)
            #expect(failure.message.contains("payload.channel"))
        }
    }

    @Test func longestValidNamesAreAccepted() async throws {
        let name = String(repeating: "a", count: 128)
        let sent = await engine.perform(.broadcast, ["channel": .string(name), "event": .string("x.y:z-w_1")])
        #expect(sent.value?["sent"] == true)
    }

    @Test(arguments: [
        (JSONValue.object(["channel": "c"]), "payload.event is required"),
        (["event": ""], "payload.event must not be empty"),
        (["event": .string(String(repeating: "e", count: 129))], "the limit is 128"),
        (["event": "bad/name"], "only letters"),
        (["event": 5], "must be a string"),
        (["event": "presence.join"], "must not start"),
        (["event": "e", "extra": 1], "unknown field payload.extra"),
    ] as [(JSONValue, String)])
    func badBroadcastsAreInvalidPayload(payload: JSONValue, message: String) async throws {
        let failure = try #require(await error(.broadcast, payload))
        #expect(failure.code == .invalidPayload)
        #expect(failure.message.contains(message))
    }

    @Test func oversizedPayloadIsRejectedWithTheLimit() async throws {
        var config = SyncConfiguration()
        config.maxPayloadBytes = 100
        let small = SyncEngine(configuration: config, emit: { _ in })
        let fits = await small.perform(.broadcast, ["event": "e", "data": .string(String(repeating: "x", count: 98))])
        #expect(fits.value != nil)
        let failure = try #require(
            await small.perform(.broadcast, ["event": "e", "data": .string(String(repeating: "x", count: 99))]).error)
        #expect(failure.code == .invalidPayload)
        #expect(failure.message.contains("101 bytes"))
        #expect(failure.message.contains("maxPayloadBytes"))
        #expect(!failure.message.contains("xxxx"))
    }

    @Test func badSubscribeFilters() async throws {
        #expect(await error(.subscribe, ["events": []])?.code == .invalidPayload)
        #expect(await error(.subscribe, ["events": [1]])?.message.contains("payload.events[0]") == true)
        #expect(await error(.subscribe, ["events": ["ok", ""]])?.message.contains("payload.events[1]") == true)
        #expect(await error(.subscribe, ["events": "a"])?.code == .invalidPayload)
        let many = JSONValue.array((0..<65).map { .string("e\($0)") })
        #expect(await error(.subscribe, ["events": many])?.message.contains("limit is 64") == true)
    }

    @Test func badUnsubscribes() async throws {
        #expect(await error(.unsubscribe, [:])?.code == .invalidPayload)
        #expect(await error(.unsubscribe, ["subscription": "sub_999"])?.code == .subscriptionFailed)
        #expect(await error(.unsubscribe, ["subscription": ""])?.code == .invalidPayload)
        #expect(await error(.unsubscribe, ["subscription": "sub_1", "channel": "c"])?.code == .invalidPayload)
        #expect(await error(.unsubscribe, ["channel": ""])?.code == .channelError)
    }

    @Test func badPresenceAndLeave() async throws {
        #expect(await error(.presence, ["userId": ""])?.message.contains("payload.userId") == true)
        #expect(await error(.presence, ["userId": .string(String(repeating: "u", count: 129))])?.code == .invalidPayload)
        #expect(await error(.presence, ["userId": "a\nb"])?.message.contains("control") == true)
        #expect(await error(.presence, ["metadata": "x"])?.message.contains("payload.metadata") == true)
        #expect(await error(.presence, ["metadata": ["userId": "spoof"]])?.message.contains("reserved") == true)
        let big = JSONValue.object(["blob": .string(String(repeating: "b", count: 5000))])
        #expect(await error(.presence, ["metadata": big])?.message.contains("limit is 4096") == true)
        #expect(await error(.leave, ["channel": "c"])?.message.contains("payload.userId is required") == true)
        #expect(await error(.leave, ["userId": "u", "channel": "bad name"])?.code == .channelError)
    }
}
