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

    /// An origin over 64 bytes is no instance's (they use 16 hex digits), and one that long
    /// would leave a frame no room for its messages: every kind of frame claiming one is dropped.
    @Test func framesFromAnOriginTooLongForAFrameAreDropped() {
        let long = String(repeating: "o", count: ClusterFrame.maxOriginBytes + 1)
        let fits = String(repeating: "o", count: ClusterFrame.maxOriginBytes)
        var receiver = ClusterReceiver(ownOrigin: "me", maxMessageBytes: 1 << 20)
        let line = String(decoding: message(0, data: 1).line(sequence: 1), as: UTF8.self)
        for payload in ["B\(long)\n\(line)", "C\(long) 1 0 1\n\(line)", "M\(long)\nnews 0a1b 7 hello 5 1", "H\(long)\nnews 0a1b 8"] {
            #expect(receiver.receive(payload).isEmpty)
        }
        #expect(receiver.malformed == 4)
        #expect(receiver.receive("B\(fits)\n\(line)").count == 1)
        #expect(receiver.malformed == 4)
    }

    /// History frames: M carries the message and its offset, H only the offset; both name the
    /// stream's epoch. Another instance's are passed on, this instance's own skipped, and any
    /// malformed one dropped and counted.
    @Test func historyFramesCarryOffsetsAndAreChecked() {
        var receiver = ClusterReceiver(ownOrigin: "me", maxMessageBytes: 1 << 20)
        var advances: [ClusterReceiver.Advance] = []
        #expect(receiver.receive("Mo1\nnews 0a1b 7 hello 5 {\"a\":\"b c\"}") { advances.append($0) }.isEmpty)
        #expect(receiver.receive("Ho1\nnews 0a1b 8") { advances.append($0) }.isEmpty)
        #expect(receiver.receive("Mme\nnews 0a1b 9 hello 5 1") { advances.append($0) }.isEmpty)
        #expect(advances.map(\.top) == [7, 8])
        #expect(advances.map(\.epoch) == ["0a1b", "0a1b"])
        #expect(advances[0].message?.data == Array(#"{"a":"b c"}"#.utf8))
        #expect(advances[0].message?.offset == 7 && advances[0].message?.origin == "o1")
        #expect(advances[1].message == nil)
        #expect(receiver.malformed == 0)
        let bad = [
            "Mo1\nnews 0a1b 7 hello 5", "Mo1\nnews 0a1b 0 hello 5 1", "Mo1\nnews XY 7 hello 5 1", "Mo1\nb@d 0a1b 7 hello 5 1",
            "Mo1\nnews 0a1b 7 he@llo 5 1", "Mo1\nnews 0a1b 7 hello x 1", "Mo1\nnews 0a1b 7 hello 5 [1, 2]", "Ho1\nnews 0a1b",
            "Ho1\nnews 0a1b -3", "Ho1\nnews 0a1b 3 4", "H", "M\n",
        ]
        for payload in bad {
            #expect(receiver.receive(payload) { advances.append($0) }.isEmpty, "\(payload)")
        }
        #expect(advances.count == 2)
        #expect(receiver.malformed == bad.count)
    }

    /// The fuzzer's find: a payload starting with a newline trapped (`bytes[1..<0]`), so anyone
    /// allowed to NOTIFY on the channel could stop every listener. Every short or odd payload
    /// is dropped and counted instead.
    @Test(arguments: ["\n", "\nB", "\n\n", "B", "C", "C\n", "C\n\n", "Co -1 0 1\nx", "Co 1 -1 1\nx", "Co 1 0 -1\nx",
        "Co 1 0 0\nx", "Co 1 99999999999999999999 1\nx", "Co 1 0 1 9\nx", "Co  1 0 1\nx", "Bo\n1 ch ev 5", "Bo\n1 ch ev 5 ", "Bo\n ch ev 5 1",
        "Bo\n1 ch ev -99999999999999999999 1", "é\n", "\u{0}\n"])
    func malformedPayloadsAreDroppedNotTrapped(_ payload: String) {
        var receiver = ClusterReceiver(ownOrigin: "me", maxMessageBytes: 1 << 20)
        #expect(receiver.receive(payload).isEmpty)
        #expect(receiver.malformed >= 1)
        #expect(receiver.lastProblem != nil)
    }

    /// The fuzzer's find: chunked data that is valid JSON but not compact was delivered, and a
    /// raw newline in it split the event line `csop run` prints. Data must be compact JSON,
    /// in chunks and in batches alike.
    @Test(arguments: ["[1,\n2]", "[1, 2]", "{ \"a\":1}", "[1,\r2]", "[1,\t2]", " 1", "1 "])
    func nonCompactDataIsDropped(_ data: String) {
        var receiver = ClusterReceiver(ownOrigin: "me", maxMessageBytes: 1 << 20)
        #expect(receiver.receive("Co1 1 0 1\n1 news hello 5 \(data)").isEmpty)
        #expect(receiver.malformed == 1)
        if !data.contains("\n") {
            #expect(receiver.receive("Bo1\n2 news hello 5 \(data)").isEmpty)
            #expect(receiver.malformed == 2)
        }
        // Spaces inside strings are compact JSON.
        let delivered = receiver.receive("Bo1\n3 news hello 5 [\"a b\",\"\\\" \"]")
        #expect(delivered.map { String(decoding: $0.data, as: UTF8.self) } == [#"["a b","\" "]"#])
    }

    @Test func unfinishedChunkedMessagesAreBounded() {
        var receiver = ClusterReceiver(ownOrigin: "me", maxMessageBytes: 1 << 20)
        for i in 0..<(ClusterReceiver.maxPartialMessages * 4) {
            #expect(receiver.receive("Corigin\(i) 1 0 2\n[1,").isEmpty)
        }
        #expect(receiver.malformed == ClusterReceiver.maxPartialMessages * 3)
        #expect(receiver.lastProblem?.contains("unfinished chunked message") == true)
        // A message that finishes still gets through.
        #expect(receiver.receive("Cfresh 1 0 2\n1 news hello 5 [1,").isEmpty)
        #expect(receiver.receive("Cfresh 1 1 2\n2]").map(\.event) == ["hello"])
    }

    @Test func droppedFramesAreLoggedAtMostOncePerInterval() {
        var log = DroppedFrameLog(interval: .seconds(60))
        let start = ContinuousClock.now
        let first = log.dropped(1, problem: "a cluster frame without a header line", at: start)
        #expect(first?.contains("sync dropped a malformed cluster frame (the last: a cluster frame without a header line)") == true)
        #expect(log.dropped(1, problem: "x", at: start + .seconds(1)) == nil)
        #expect(log.dropped(2, problem: "y", at: start + .seconds(59)) == nil)
        let next = log.dropped(1, problem: "z", at: start + .seconds(61))
        #expect(next?.contains("sync dropped 4 malformed cluster frames (the last: z)") == true)
        #expect(next?.contains("at most one report per 60 s") == true)
    }

    @Test func problemsNameOnlyReadableOrigins() {
        var receiver = ClusterReceiver(ownOrigin: "me", maxMessageBytes: 1 << 20)
        _ = receiver.receive("Ba1b2\nnot a line")
        #expect(receiver.lastProblem?.contains("from origin a1b2") == true)
        _ = receiver.receive("B\u{1b}[31mred\nnot a line")
        #expect(receiver.lastProblem?.contains("\u{1b}") == false)
        #expect(receiver.lastProblem?.contains("not a readable instance id") == true)
    }
}
