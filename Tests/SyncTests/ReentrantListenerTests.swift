import CSOPCore
import Synchronization
import Testing

@testable import SyncPlugin

/// An event listener that calls back into sync from inside an event (as a host listener that
/// dispatches `sync.broadcast` does in local mode) neither deadlocks nor reorders delivery.
@Suite struct ReentrantListenerTests {
    /// The engine a listener calls back into, set once the engine exists.
    final class EngineBox: Sendable {
        let engine = Mutex<SyncEngine?>(nil)
        let events = Mutex<[JSONValue]>([])
    }

    func broadcast(_ engine: SyncEngine, _ event: String) {
        engine.perform(.broadcast, ["channel": "room", "event": .string(event)]) { _ in }
    }

    @Test func aListenerThatBroadcastsGetsItsMessageRightAfterTheCurrentOne() async throws {
        let box = EngineBox()
        let engine = SyncEngine(configuration: SyncConfiguration()) { bytes in
            let event = (try? JSONValue(parsing: bytes)) ?? .null
            box.events.withLock { $0.append(event) }
            // Answer every "ping" with a "pong", from inside the event.
            if event["event"] == "ping", let engine = box.engine.withLock({ $0 }) {
                engine.perform(.broadcast, ["channel": "room", "event": "pong"]) { _ in }
            }
        }
        box.engine.withLock { $0 = engine }
        let a = try #require(await engine.perform(.subscribe, ["channel": "room"]).value?["subscription"]?.stringValue)
        let b = try #require(await engine.perform(.subscribe, ["channel": "room"]).value?["subscription"]?.stringValue)
        _ = try #require(await engine.perform(.broadcast, ["channel": "room", "event": "ping"]).value)
        // Both pings (one per subscriber) answered two pongs each, all before broadcast returned.
        let events = box.events.withLock { $0 }
        for id in [a, b] {
            let seen = events.filter { $0["subscription"]?.stringValue == id }.compactMap { $0["event"]?.stringValue }
            #expect(seen == ["ping", "pong", "pong"])
        }
        #expect(events.count == 6)
    }

    @Test func aListenerThatUnsubscribesGetsNothingMore() async throws {
        let box = EngineBox()
        let engine = SyncEngine(configuration: SyncConfiguration()) { bytes in
            let event = (try? JSONValue(parsing: bytes)) ?? .null
            box.events.withLock { $0.append(event) }
            if let engine = box.engine.withLock({ $0 }) {
                engine.perform(.unsubscribe, ["channel": "room"]) { _ in }
            }
        }
        box.engine.withLock { $0 = engine }
        for _ in 0..<3 { _ = try #require(await engine.perform(.subscribe, ["channel": "room"]).value) }
        _ = try #require(await engine.perform(.broadcast, ["channel": "room", "event": "once"]).value)
        _ = try #require(await engine.perform(.broadcast, ["channel": "room", "event": "twice"]).value)
        // The first subscriber's event unsubscribed the whole channel: the others got nothing.
        #expect(box.events.withLock { $0 }.count == 1)
    }

    @Test func concurrentPublishersAndUnsubscribesNeitherDeadlockNorLoseOrder() async throws {
        let box = EngineBox()
        let engine = SyncEngine(configuration: SyncConfiguration()) { bytes in
            box.events.withLock { $0.append((try? JSONValue(parsing: bytes)) ?? .null) }
        }
        let ids = try await (0..<4).asyncMap { _ in
            try #require(await engine.perform(.subscribe, ["channel": "room"]).value?["subscription"]?.stringValue)
        }
        await withTaskGroup(of: Void.self) { group in
            for publisher in 0..<4 {
                group.addTask {
                    for i in 0..<200 { _ = await engine.perform(.broadcast, ["channel": "room", "event": .string("p\(publisher)"), "data": .int(Int64(i))]) }
                }
            }
        }
        let events = box.events.withLock { $0 }
        #expect(events.count == 4 * 4 * 200)
        // Every subscriber saw the same sequence.
        let sequences = ids.map { id in events.filter { $0["subscription"]?.stringValue == id }.map { "\($0["event"]!)\($0["data"]!)" } }
        #expect(Set(sequences.map { $0.joined(separator: ",") }).count == 1)
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
