import CSOPHost
import Testing

@Suite struct RequestTests {
    @Test func generatesDistinctPrefixedIDs() {
        let ids = (0..<1000).map { _ in Request.generateID() }
        #expect(Set(ids).count == 1000)
        #expect(ids.allSatisfy { $0.hasPrefix("csop_") && $0.count == 21 })
    }

    @Test func decodesAFullRequest() throws {
        let json = try JSONValue(parsing: #"{"id":"r1","action":"storage.save","payload":{"key":"k"},"options":{"timeout":250,"retry":2}}"#)
        let request = try Request.decode(json).get()
        #expect(request.id == "r1")
        #expect(request.action == "storage.save")
        #expect(request.options == RequestOptions(timeout: 250, retry: 2))
    }

    @Test func defaultsOptionsAndPayload() throws {
        let request = try Request.decode(["action": "a.b"]).get()
        #expect(request.options == RequestOptions(timeout: 5000, retry: 0))
        #expect(request.payload == .object([:]))
        #expect(request.id.hasPrefix("csop_"))
    }

    @Test(arguments: [
        (#"[1]"#, "INVALID_PAYLOAD", "must be a JSON object"),
        (#"{"payload":{}}"#, "INVALID_ACTION", "has no action"),
        (#"{"action":5}"#, "INVALID_ACTION", "must be a string"),
        (#"{"action":"a.b","options":{"timeout":"fast"}}"#, "INVALID_PAYLOAD", "options.timeout must be a number"),
        (#"{"action":"a.b","options":{"timeout":0}}"#, "INVALID_PAYLOAD", "options.timeout must be between"),
        (#"{"action":"a.b","options":{"retry":1.5}}"#, "INVALID_PAYLOAD", "options.retry must be an integer"),
        (#"{"action":"a.b","options":{"retry":11}}"#, "INVALID_PAYLOAD", "options.retry must be between 0 and 10"),
        (#"{"action":"a.b","options":{"retries":1}}"#, "INVALID_PAYLOAD", "unknown field options.retries"),
        (#"{"action":"a.b","options":[]}"#, "INVALID_PAYLOAD", "options must be an object"),
        (#"{"action":"a.b","extra":1}"#, "INVALID_PAYLOAD", "unknown request field"),
        (#"{"id":7,"action":"a.b"}"#, "INVALID_PAYLOAD", "id must be a non-empty string"),
    ])
    func rejectsBadRequests(_ text: String, _ code: String, _ message: String) throws {
        guard case .failure(let failure) = Request.decode(try JSONValue(parsing: text)) else {
            Issue.record("accepted \(text)")
            return
        }
        #expect(failure.error.code.rawValue == code)
        #expect(failure.error.message.contains(message), "\(failure.error.message)")
        #expect(failure.error.retryable == false)
    }

    @Test func keepsTheIDOfARejectedRequest() throws {
        guard case .failure(let failure) = Request.decode(try JSONValue(parsing: #"{"id":"x1","action":"a.b","options":{"retry":-1}}"#)) else {
            Issue.record("accepted")
            return
        }
        #expect(failure.id == "x1")
    }

    @Test(arguments: ["storage.save", "a.b", "_x.y_2", "Compute.execute"])
    func acceptsActions(_ text: String) throws {
        let action = try Action(text)
        #expect(action.description == text)
    }

    @Test(arguments: ["", "storage", "storage.", ".save", "a.b.c", "1a.b", "a.b-c", "a b.c", "ü.x", String(repeating: "a", count: 65) + ".b"])
    func rejectsActions(_ text: String) {
        #expect {
            try Action(text)
        } throws: { error in
            (error as? CSOPError)?.code == .invalidAction
        }
    }

    @Test func serializesResponsesInProtocolShape() throws {
        let ok = Response(id: "a", outcome: .success(RawJSON(["x": 1])), duration: 0.25)
        #expect(ok.serialized() == Array(#"{"id":"a","status":"ok","data":{"x":1},"duration":0.25}"#.utf8))
        let failed = Response(id: "b", outcome: .failure(CSOPError(.timeout, "slow", retryable: true)), duration: 5)
        let json = try JSONValue(parsing: failed.serialized())
        #expect(json["status"] == "error")
        #expect(json["error"] == ["code": "TIMEOUT", "message": "slow", "retry": true])
        #expect(json["duration"]?.doubleValue == 5)
    }

    @Test func backoffDoublesUpToTheCap() {
        let policy = BackoffPolicy(baseMilliseconds: 100, capMilliseconds: 1000, jitter: 0.5)
        #expect((0..<6).map { policy.delay(afterAttempt: $0, random: 1) } == [100, 200, 400, 800, 1000, 1000])
        #expect((0..<3).map { policy.delay(afterAttempt: $0, random: 0) } == [50, 100, 200])
    }
}
