import CSOPCore
import Testing

@testable import SyncPlugin

@Suite struct ClusterFrameTests {
    func message(_ i: Int, data: JSONValue) -> SyncMessage {
        SyncMessage(channel: "ch", event: "ev\(i)", data: data.serialized(), timestamp: 1_700_000_000_000, origin: "o1")
    }

    @Test func smallMessagesShareFramesAndRoundTripInOrder() {
        let messages = (0..<300).map { message($0, data: ["i": .int(Int64($0)), "s": "héllo \"q\"\n"]) }
        let lines = messages.enumerated().map { (sequence: UInt64($0.offset + 1), bytes: $0.element.line(sequence: UInt64($0.offset + 1))) }
        let frames = ClusterFrame.frames(origin: "o1", lines: lines)
        #expect(frames.count > 1 && frames.count < 20)
        #expect(frames.allSatisfy { $0.utf8.count < 8000 })
        var receiver = ClusterReceiver(ownOrigin: "me", maxMessageBytes: 1 << 20)
        let received = frames.flatMap { receiver.receive($0) }
        #expect(received.map(\.event) == messages.map(\.event))
        #expect(received.map(\.data) == messages.map(\.data))
        #expect(received.allSatisfy { $0.origin == "o1" && $0.channel == "ch" && $0.timestamp == 1_700_000_000_000 })
        // The same frames again (a duplicate) deliver nothing.
        #expect(frames.flatMap { receiver.receive($0) }.isEmpty)
    }

    @Test func largeMessagesAreChunkedOnScalarBoundariesAndReassembled() {
        let text = String(repeating: "aé😀", count: 60_000)
        let big = message(1, data: .string(text))
        let lines = [
            (sequence: UInt64(1), bytes: message(0, data: 1).line(sequence: 1)),
            (sequence: UInt64(2), bytes: big.line(sequence: 2)),
            (sequence: UInt64(3), bytes: message(2, data: 2).line(sequence: 3)),
        ]
        let frames = ClusterFrame.frames(origin: "o1", lines: lines)
        #expect(frames.count > 50)
        #expect(frames.allSatisfy { $0.utf8.count < 8000 && String(validating: Array($0.utf8), as: UTF8.self) != nil })
        var receiver = ClusterReceiver(ownOrigin: "me", maxMessageBytes: 1 << 20)
        let received = frames.flatMap { receiver.receive($0) }
        #expect(received.map(\.event) == ["ev0", "ev1", "ev2"])
        #expect(received[1].data == big.data)
    }

    @Test func ownEchoesAndGarbageAreDropped() {
        let frames = ClusterFrame.frames(origin: "me", lines: [(sequence: 1, bytes: message(0, data: 1).line(sequence: 1))])
        var receiver = ClusterReceiver(ownOrigin: "me", maxMessageBytes: 1 << 20)
        #expect(frames.flatMap { receiver.receive($0) }.isEmpty)
        for garbage in ["", "X", "Bo\n1 ch ev 5 {bad", "Bo\nnot a line", "Co 1 5 2\nabc", "Bo\n1 b@d ev 5 1", "Q\n"] {
            #expect(receiver.receive(garbage).isEmpty)
        }
        #expect(receiver.malformed == 7)
    }
}
