import CSOPCore
import Testing

@Suite struct CallerTests {
    @Test(arguments: [
        ("*", ["*"]), ("storage.*", ["storage.*"]), ("storage.*,sync.*", ["storage.*", "sync.*"]),
        (" storage.get , sync.broadcast ", ["storage.get", "sync.broadcast"]), ("storage.get,storage.get", ["storage.get"]),
        ("", []), ("  ", []), ("_x.y_1", ["_x.y_1"]),
    ])
    func parsesGoodPatterns(_ text: String, _ expected: [String]) throws {
        let patterns = try ActionPatterns(parsing: text)
        #expect(patterns.patterns == expected)
        #expect(patterns.description == expected.joined(separator: ","))
        #expect(try ActionPatterns(parsing: patterns.description) == patterns)
    }

    @Test(arguments: [
        "storage", "storage.", ".get", "storage.get.x", "*.get", "stor*", "storage.ge*", "1storage.get", "storage.get-x",
        "storage.*,", ",storage.*", "storage.*,,sync.*", "**", "storage .get", "storage.*\u{0}",
        String(repeating: "a", count: 65) + ".get",
    ])
    func refusesBadPatterns(_ text: String) {
        #expect(throws: CSOPError.self) { try ActionPatterns(parsing: text) }
        do {
            _ = try ActionPatterns(parsing: text)
        } catch {
            #expect(error.code == .invalidPayload)
            #expect(error.message.contains("is not valid"))
        }
    }

    @Test func theErrorNamesTheBadPattern() {
        do {
            _ = try ActionPatterns(["storage.*", "sync.nope.x"])
            Issue.record("accepted a bad pattern")
        } catch {
            #expect(error.code == .invalidPayload)
            #expect(error.message.contains("\"sync.nope.x\""))
        }
    }

    @Test func matchesByDomainOperationOrEverything() throws {
        let patterns = try ActionPatterns(["storage.*", "sync.broadcast"])
        #expect(patterns.matches("storage.get"))
        #expect(patterns.matches("storage.saveMany"))
        #expect(patterns.matches("sync.broadcast"))
        #expect(!patterns.matches("sync.subscribe"))
        #expect(!patterns.matches("storagex.get"))
        #expect(!patterns.matches("storag.get"))
        #expect(!patterns.matches("host.info"))
        #expect(!patterns.matches("storage."))
        #expect(ActionPatterns.all.matches("host.info"))
        #expect(ActionPatterns.all.patterns == ["*"])
        #expect(!(try ActionPatterns([])).matches("host.ping"))
    }

    @Test func callerDefaultsTenantToSubjectAndValidatesBoth() throws {
        let caller = Caller(subject: "alice", actions: .all)
        #expect(caller.tenant == "alice")
        #expect(caller.allows("storage.get"))
        try caller.validate()
        try Caller(subject: "bob", tenant: "acme corp/é", actions: .all).validate()
        let bad = [
            Caller(subject: "", actions: .all), Caller(subject: "a", tenant: "", actions: .all),
            Caller(subject: "a\u{0}b", actions: .all), Caller(subject: "a", tenant: "t\nx", actions: .all),
            Caller(subject: String(repeating: "x", count: 129), actions: .all), Caller(subject: "a\u{85}", actions: .all),
        ]
        for caller in bad {
            #expect(throws: CSOPError.self) { try caller.validate() }
            do { try caller.validate() } catch { #expect(error.code == .unauthenticated) }
        }
        try Caller(subject: String(repeating: "x", count: 128), actions: .all).validate()
    }
}
