import CSOPCore
import CSOPTestSupport
import Foundation
import Testing
@testable import StoragePlugin

@Suite struct StoragePluginTests {
    let directory = TemporaryDirectory.storage()

    func open(_ extra: JSONObject = [:]) throws -> PluginHarness {
        var config: JSONObject = ["path": .string(directory.databasePath)]
        for member in extra { config[member.key] = member.value }
        return try PluginHarness(config: .object(config))
    }

    @Test func getReturnsExactlyWhatWasSaved() async throws {
        let storage = try open()
        let values: [String] = [
            #"{"b":1,"a":[true,false,null],"c":{"z":"é\n\"x\"","y":-0.5}}"#, #""plain""#, "42", "-7.25", "null", "[]", "{}",
            #"["\u0000",1e300,12345678901234]"#,
        ]
        for (i, text) in values.enumerated() {
            let data = try JSONValue(parsing: text)
            let saved = await storage.call("save", ["key": .string("k\(i)"), "data": data])
            #expect(saved.isOK, "\(saved.error?.description ?? "")")
            #expect(saved["location"] == "local")
            #expect(saved["size"] == .int(Int64(data.serialized().count)))
            let got = await storage.call("get", ["key": .string("k\(i)")])
            #expect(got.raw == data.serialized())
        }
    }

    /// Numbers come back as the same numbers: -0 keeps its sign, integers beyond 64 bits and
    /// numbers beyond a double's range or precision keep their digits, and doubles come back
    /// as the same double (in their shortest form: 1.5e308 is written 1.5e+308).
    @Test(arguments: [
        ("-0", "-0.0"), ("1e-400", "1e-400"), ("18446744073709551616", "18446744073709551616"),
        ("123456789012345678901234567890", "123456789012345678901234567890"), ("1.5e308", "1.5e+308"), ("5e-324", "5e-324"),
        ("-1e400", "-1e400"), ("0.30000000000000001", "0.30000000000000001"), ("-0.0", "-0.0"),
    ])
    func numbersComeBackExactly(_ number: String, _ written: String) async throws {
        let storage = try open()
        let request = #"{"key":"n","data":{"value":\#(number),"list":[\#(number)]}}"#
        let saved = await storage.call("save", rawPayload: Array(request.utf8))
        #expect(saved.isOK, "\(saved.error?.description ?? "")")
        let got = await storage.call("get", ["key": "n"])
        #expect(got.raw == Array(#"{"value":\#(written),"list":[\#(written)]}"#.utf8))
        let value = try #require(got.value)
        #expect(value["value"] == (try JSONValue(parsing: number)))
        #expect(value["value"]?.doubleValue?.bitPattern == Double(number)?.bitPattern)
    }

    @Test func missingKeyIsKeyNotFoundAndNotRetryable() async throws {
        let storage = try open()
        let reply = await storage.call("get", ["key": "nope"])
        #expect(reply.code == "KEY_NOT_FOUND")
        #expect(reply.error?.retryable == false)
        #expect(reply.error?.message.contains("nope") == true)
    }

    @Test func versionsIncreaseAndIfVersionGuardsSaves() async throws {
        let storage = try open()
        #expect(await storage.call("save", ["key": "v", "data": 1])["version"] == 1)
        #expect(await storage.call("save", ["key": "v", "data": 2])["version"] == 2)
        let stale = await storage.call("save", ["key": "v", "data": 3, "options": ["ifVersion": 1]])
        #expect(stale.code == "CONFLICT")
        #expect(stale.error?.message.contains("version 2") == true)
        #expect(await storage.call("get", ["key": "v"]).value == 2)
        let fresh = await storage.call("save", ["key": "v", "data": 4, "options": ["ifVersion": 2]])
        #expect(fresh["version"] == 3)
        // ifVersion 0 means "only if the key does not exist yet".
        #expect(await storage.call("save", ["key": "v", "data": 5, "options": ["ifVersion": 0]]).code == "CONFLICT")
        #expect(await storage.call("save", ["key": "new", "data": 5, "options": ["ifVersion": 0]])["version"] == 1)
        #expect(await storage.call("get", ["key": "v"]).value == 4)
    }

    @Test func sweepWithoutAColdTierHasNothingToDo() async throws {
        let storage = try open()
        #expect(await storage.call("sweep", [:]).value == ["checked": 0, "removed": 0, "coldTier": false])
    }

    @Test func deleteReportsWhetherTheKeyExisted() async throws {
        let storage = try open()
        _ = await storage.call("save", ["key": "d", "data": "x"])
        let first = await storage.call("delete", ["key": "d"])
        #expect(first.value == ["deleted": true, "key": "d"])
        let second = await storage.call("delete", ["key": "d"])
        #expect(second.value == ["deleted": false, "key": "d"])
        #expect(await storage.call("get", ["key": "d"]).code == "KEY_NOT_FOUND")
        // A re-created key continues from the version it was deleted at.
        #expect(await storage.call("save", ["key": "d", "data": "y"])["version"] == 2)
    }

    /// ABA: a client that read version n before a delete must not overwrite the key made after it.
    @Test func versionsNeverRepeatForAKeyDeletesIncluded() async throws {
        let storage = try open()
        for i in 1...3 { #expect(await storage.call("save", ["key": "k", "data": .int(Int64(i))])["version"] == .int(Int64(i))) }
        #expect(await storage.call("delete", ["key": "k"])["deleted"] == true)
        // The plain save (one autocommit statement) continues at 4.
        #expect(await storage.call("save", ["key": "k", "data": "again"])["version"] == 4)
        // A writer still holding version 1, 2 or 3 from before the delete conflicts.
        for stale in 1...3 {
            let reply = await storage.call("save", ["key": "k", "data": "stale", "options": ["ifVersion": .int(Int64(stale))]])
            #expect(reply.code == "CONFLICT", "ifVersion \(stale)")
        }
        #expect(await storage.call("get", ["key": "k"]).value == "again")
        // The transactional paths too: ifVersion 0 (must not exist) and saveMany.
        #expect(await storage.call("delete", ["key": "k"])["deleted"] == true)
        #expect(await storage.call("save", ["key": "k", "data": 5, "options": ["ifVersion": 0]])["version"] == 5)
        #expect(await storage.call("delete", ["key": "k"])["deleted"] == true)
        let many = await storage.call("saveMany", ["items": [["key": "k", "data": 6], ["key": "fresh", "data": 1]]])
        #expect(many["items"]?.arrayValue?.map { $0["version"] } == [6, 1], "\(many.value)")
        // Deleted twice, the higher version is kept; and it survives a reopen.
        #expect(await storage.call("delete", ["key": "k"])["deleted"] == true)
        storage.close()
        let reopened = try open()
        #expect(await reopened.call("save", ["key": "k", "data": 7])["version"] == 7)
    }

    @Test func listPaginatesInKeyOrderWithPrefix() async throws {
        let storage = try open()
        var items: [JSONValue] = []
        for i in 0..<25 { items.append(["key": .string(String(format: "user:%02d", i)), "data": .int(Int64(i))]) }
        for key in ["user", "usex:1", "a", "user;"] { items.append(["key": .string(key), "data": 0]) }
        #expect(await storage.call("saveMany", ["items": .array(items)]).isOK)

        var seen: [String] = []
        var cursor: JSONValue = .null
        var pages = 0
        repeat {
            let page = await storage.call("list", ["prefix": "user:", "limit": 10, "cursor": cursor])
            let keys = try #require(page["keys"]?.arrayValue).compactMap(\.stringValue)
            seen += keys
            cursor = page["cursor"] ?? .null
            pages += 1
        } while !cursor.isNull && pages < 10
        #expect(pages == 3)
        #expect(seen == (0..<25).map { String(format: "user:%02d", $0) })

        let all = await storage.call("list", [:])
        #expect(all["keys"]?.arrayValue?.count == 29)
        #expect(all["cursor"] == .null)
        let sorted = try #require(all["keys"]?.arrayValue).compactMap(\.stringValue)
        #expect(sorted == sorted.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        let none = await storage.call("list", ["prefix": "zzz"])
        #expect(none.value == ["keys": [], "cursor": nil])
    }

    @Test func saveManyIsAtomicAndGetManyReportsMissing() async throws {
        let storage = try open()
        _ = await storage.call("save", ["key": "b", "data": "old"])
        let conflicting = await storage.call(
            "saveMany",
            ["items": [["key": "a", "data": 1], ["key": "b", "data": "new", "options": ["ifVersion": 7]], ["key": "c", "data": 3]]])
        #expect(conflicting.code == "CONFLICT")
        #expect(await storage.call("get", ["key": "a"]).code == "KEY_NOT_FOUND")
        #expect(await storage.call("get", ["key": "b"]).value == "old")

        let saved = await storage.call(
            "saveMany", ["items": [["key": "a", "data": 1], ["key": "b", "data": "new", "options": ["ifVersion": 1]]]])
        #expect(saved["count"] == 2)
        #expect(saved["items"]?.arrayValue?.map { $0["version"] } == [1, 2])
        let many = await storage.call("getMany", ["keys": ["a", "b", "zz", "a"]])
        #expect(many.value == ["values": ["a": 1, "b": "new"], "missing": ["zz"]])
    }

    @Test func statsCountKeysAndBytes() async throws {
        let storage = try open()
        _ = await storage.call("save", ["key": "one", "data": "12345678"])  // 10 bytes of JSON
        _ = await storage.call("save", ["key": "two", "data": [1, 2]])  // 5 bytes
        let stats = await storage.call("stats", [:])
        #expect(stats["local"]?["count"] == 2)
        #expect(stats["local"]?["bytes"] == 15)
        #expect(stats["cloud"]?["count"] == 0)
        #expect(stats["total"] == ["count": 2, "bytes": 15])
        #expect(stats["coldTier"] == false)
    }

    @Test func quotaRejectsASaveAndChangesNothing() async throws {
        let storage = try open(["maxBytes": 100])
        #expect(await storage.call("save", ["key": "a", "data": .string(String(repeating: "x", count: 60))]).isOK)
        let over = await storage.call("save", ["key": "b", "data": .string(String(repeating: "y", count: 60))])
        #expect(over.code == "QUOTA_EXCEEDED")
        #expect(over.error?.retryable == false)
        #expect(over.error?.message.contains("maxBytes") == true)
        #expect(await storage.call("get", ["key": "b"]).code == "KEY_NOT_FOUND")
        // Replacing a value only counts the difference; shrinking always fits.
        #expect(await storage.call("save", ["key": "a", "data": .string(String(repeating: "z", count: 90))]).isOK)
        #expect(await storage.call("saveMany", ["items": [["key": "c", "data": 1], ["key": "d", "data": .string(String(repeating: "w", count: 20))]]]).code == "QUOTA_EXCEEDED")
        #expect(await storage.call("get", ["key": "c"]).code == "KEY_NOT_FOUND")
        _ = await storage.call("delete", ["key": "a"])
        #expect(await storage.call("save", ["key": "b", "data": .string(String(repeating: "y", count: 60))]).isOK)
    }

    @Test func compressionIsTransparentAndStoresFewerBytes() async throws {
        let storage = try open()
        let text = JSONValue.string(String(repeating: "compressible ", count: 500))
        let saved = await storage.call("save", ["key": "z", "data": text, "options": ["compress": true]])
        #expect(saved["size"] == .int(Int64(text.serialized().count)))
        #expect(await storage.call("get", ["key": "z"]).raw == text.serialized())
        let stats = await storage.call("stats", [:])
        let stored = try #require(stats["local"]?["storedBytes"]?.int64Value)
        #expect(stored < 500)
        #expect(!directory.databaseBytes().containsBytes(Array("compressible compressible".utf8)))
    }

    @Test func valuesSurviveReopening() async throws {
        do {
            let storage = try open()
            _ = await storage.call("save", ["key": "persist", "data": ["n": 1]])
            _ = await storage.call("save", ["key": "persist", "data": ["n": 2]])
            storage.close()
        }
        let reopened = try open()
        #expect(await reopened.call("get", ["key": "persist"]).value == ["n": 2])
        #expect(await reopened.call("save", ["key": "persist", "data": 3])["version"] == 3)
    }

    @Test func concurrentWritersLoseNothing() async throws {
        let storage = try open(["maxBytes": 10_000_000])
        await withTaskGroup(of: Void.self) { group in
            for writer in 0..<8 {
                group.addTask {
                    for i in 0..<100 {
                        _ = await storage.call("save", ["key": .string("w\(writer)-\(i)"), "data": .int(Int64(i))])
                        _ = await storage.call("save", ["key": "shared", "data": .int(Int64(writer))])
                    }
                }
            }
        }
        let listed = await storage.call("list", ["prefix": "w", "limit": 10_000])
        #expect(listed["keys"]?.arrayValue?.count == 800)
        for writer in 0..<8 {
            #expect(await storage.call("get", ["key": .string("w\(writer)-99")]).value == 99)
        }
        #expect(await storage.call("save", ["key": "shared", "data": 0])["version"] == 801)
    }

    @Test func cancellingABigSaveManyLeavesAllOrNothing() async throws {
        let storage = try open()
        let items = JSONValue.array((0..<5000).map { ["key": .string("bulk\($0)"), "data": .string(String(repeating: "v", count: 200))] })
        let id = PluginHarness.newCallID()
        async let reply = storage.call("saveMany", ["items": items], callID: id)
        storage.cancel(id)
        let result = await reply
        let count = await storage.call("stats", [:])["local"]?["count"]
        if result.isOK {
            #expect(count == 5000)
        } else {
            #expect(result.code == "TIMEOUT")
            #expect(count == 0)
        }
    }
}
