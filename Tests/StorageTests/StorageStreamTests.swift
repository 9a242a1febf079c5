import CSOPCore
import CSOPTestSupport
import Foundation
import Testing
@testable import StoragePlugin

/// Streamed values (`storage.upload`, `append`, `commit`, `abort`, `read`): bytes beyond the
/// 64 MiB limit of a JSON value, in chunks, with every bad case answered by a code.
@Suite struct StorageStreamTests {
    let directory = TemporaryDirectory.storage()

    /// By default the purge waits a day, so a test sees chunks until it asks for a purge.
    func open(purgeInterval: Int64 = 86_400_000, _ extra: JSONObject = [:]) throws -> PluginHarness {
        var config: JSONObject = ["path": .string(directory.databasePath), "purgeInterval": .int(purgeInterval)]
        for member in extra { config[member.key] = member.value }
        return try PluginHarness(config: .object(config))
    }

    /// Deterministic bytes that differ from chunk to chunk and, within one, from one 8-byte
    /// word to the next (a pattern cheap to make in a debug build).
    static func bytes(_ count: Int, seed: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        result.withUnsafeMutableBytes { raw in
            var word = UInt64(truncatingIfNeeded: seed) &* 0x9E37_79B9_7F4A_7C15 | 1
            var at = 0
            while at < count {
                word = word &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                withUnsafeBytes(of: word) { raw.baseAddress!.advanced(by: at).copyMemory(from: $0.baseAddress!, byteCount: min(8, count - at)) }
                at += 8
            }
        }
        return result
    }

    /// Whether two byte ranges are equal (memcmp: an element loop is slow in a debug build).
    static func same(_ a: ArraySlice<UInt8>, _ b: [UInt8]) -> Bool {
        a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, b.count) == 0 } }
    }

    static func base64(_ bytes: some Sequence<UInt8>) -> JSONValue { .string(Data(bytes).base64EncodedString()) }

    func upload(_ storage: PluginHarness, _ key: String, options: JSONObject = [:], caller: Caller? = nil) async throws -> String {
        let opened = await storage.call("upload", ["key": .string(key), "options": .object(options)], caller: caller)
        guard case .string(let id)? = opened["upload"] else { throw TestFailure("storage.upload: \(opened.error?.description ?? "no id")") }
        return id
    }

    /// Reads the whole value in slices of `length`, pinned to the first slice's version.
    func readAll(_ storage: PluginHarness, _ key: String, length: Int64 = 1 << 20) async throws -> (bytes: [UInt8], version: Int64) {
        var result: [UInt8] = []
        var version: Int64?
        while true {
            var payload: JSONObject = ["key": .string(key), "offset": .int(Int64(result.count)), "length": .int(length)]
            if let version { payload["version"] = .int(version) }
            let slice = await storage.call("read", .object(payload))
            guard case .string(let text)? = slice["data"], let data = Data(base64Encoded: text), case .int(let at)? = slice["version"] else {
                throw TestFailure("storage.read: \(slice.error?.description ?? "no data")")
            }
            version = at
            result.append(contentsOf: data)
            if slice["done"] == true { return (result, at) }
        }
    }

    func chunksInFile() throws -> Int {
        let connection = try SQLiteConnection(path: directory.databasePath, readOnly: true, create: false, busyTimeoutMilliseconds: 5000)
        return Int(try connection.scalarText("SELECT count(*) FROM csop_storage_chunks") ?? "") ?? -1
    }

    /// Waits (without asserting any timing) until the file holds no chunk.
    func waitForNoChunks() async throws {
        for _ in 0..<2000 where try chunksInFile() > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(try chunksInFile() == 0)
    }

    /// (A value past the 64 MiB of a JSON value goes through `csop run` in StreamedValueRunTests:
    /// here, in the test process, the bytes stay small enough not to hog its few threads.)
    @Test func aValueSavesInChunksOfAnySizeInAnyOrderAndReadsBackExactly() async throws {
        let storage = try open()
        let sizes = [1 << 20, 300_001, 1000, 65_536]
        let offsets = sizes.indices.map { sizes[..<$0].reduce(0, +) }
        let chunks = sizes.indices.map { Self.bytes(sizes[$0], seed: $0) }
        let id = try await upload(storage, "video")
        // Out of order, one repeated: the commit only asks that they cover the value once.
        for index in Array(sizes.indices.reversed()) + [1] {
            let appended = await storage.call(
                "append", ["upload": .string(id), "offset": .int(Int64(offsets[index])), "data": Self.base64(chunks[index])])
            #expect(appended["length"] == .int(Int64(sizes[index])), "\(appended.error?.description ?? "")")
        }
        let total = Int64(sizes.reduce(0, +))
        let committed = await storage.call("commit", ["upload": .string(id), "size": .int(total)])
        #expect(committed.value == ["key": "video", "location": "stream", "size": .int(total), "version": 1], "\(committed.error?.description ?? "")")

        // Slices that do not line up with the chunks, and a last one that is short.
        let (read, version) = try await readAll(storage, "video", length: 700_001)
        #expect(version == 1)
        var value: [UInt8] = []
        for chunk in chunks { value += chunk }
        #expect(Self.same(read[...], value), "the value read back different bytes")
        let tail = await storage.call("read", ["key": "video", "offset": .int(total - 10), "length": 100])
        #expect(tail["length"] == 10 && tail["done"] == true && tail["size"] == .int(total))
        let end = await storage.call("read", ["key": "video", "offset": .int(total)])
        #expect(end["length"] == 0 && end["done"] == true && end["data"] == "")

        let stats = await storage.call("stats", [:])
        #expect(stats["stream"]?["count"] == 1 && stats["stream"]?["bytes"] == .int(total) && stats["total"]?["bytes"] == .int(total))
        #expect(await storage.call("list", [:])["keys"] == ["video"])
        // The repeated append replaced its chunk: one row per offset.
        #expect(try chunksInFile() == sizes.count)
    }

    @Test func anEmptyValueAndTheTwoKindsOfValueAreToldApart() async throws {
        let storage = try open()
        let id = try await upload(storage, "empty")
        #expect(await storage.call("commit", ["upload": .string(id)])["size"] == 0)
        let empty = await storage.call("read", ["key": "empty"])
        #expect(empty["data"] == "" && empty["done"] == true && empty["size"] == 0)

        let get = await storage.call("get", ["key": "empty"])
        #expect(get.code == "STREAMED_VALUE")
        #expect(get.error?.message == "'empty' holds a streamed value; read it in slices with storage.read")
        #expect(await storage.call("getMany", ["keys": ["empty"]]).code == "STREAMED_VALUE")
        #expect(await storage.call("save", ["key": "json", "data": ["a": 1]]).isOK)
        let read = await storage.call("read", ["key": "json"])
        #expect(read.code == "NOT_STREAMED")
        #expect(read.error?.message == "'json' holds a JSON value, not a streamed one; read it with storage.get")
        #expect(await storage.call("read", ["key": "missing"]).code == "KEY_NOT_FOUND")
    }

    @Test func badUploadsAppendsAndReadsGetACodeAndSayWhatToFix() async throws {
        let storage = try open(["maxStreamSize": 100, "maxUploads": 2])
        let id = try await upload(storage, "k")
        let cases: [(String, JSONValue, String, String)] = [
            ("upload", ["key": "k", "options": ["encrypt": true]], "INVALID_PAYLOAD", "payload.options.encrypt and .compress are not available for streamed values"),
            ("upload", ["key": "k", "options": ["ttl": 0]], "INVALID_PAYLOAD", "payload.options.ttl"),
            ("upload", ["key": ""], "INVALID_PAYLOAD", "payload.key must not be empty"),
            ("append", ["upload": "nope", "offset": 0, "data": "AA=="], "INVALID_PAYLOAD", "payload.upload must be the id storage.upload answered"),
            ("append", ["upload": .string(id), "data": "AA=="], "INVALID_PAYLOAD", "payload.offset is required"),
            ("append", ["upload": .string(id), "offset": -1, "data": "AA=="], "INVALID_PAYLOAD", "payload.offset"),
            ("append", ["upload": .string(id), "offset": 0, "data": "not base64!"], "INVALID_PAYLOAD", "payload.data must be base64"),
            ("append", ["upload": .string(id), "offset": 0, "data": ""], "INVALID_PAYLOAD", "payload.data"),
            ("append", ["upload": .string(id), "offset": 0, "data": 12], "INVALID_PAYLOAD", "payload.data"),
            ("append", ["upload": .string(id), "offset": 99, "data": "AAAA"], "INVALID_PAYLOAD", "config.maxStreamSize (100 bytes)"),
            ("append", ["upload": .string(String(repeating: "0", count: 32)), "offset": 0, "data": "AA=="], "UPLOAD_NOT_FOUND", "no open upload of yours"),
            ("commit", ["upload": .string(id), "extra": 1], "INVALID_PAYLOAD", "extra"),
            ("read", ["key": "k", "length": 0], "INVALID_PAYLOAD", "payload.length"),
            ("read", ["key": "k", "length": 4_194_305], "INVALID_PAYLOAD", "payload.length"),
        ]
        for (operation, payload, code, message) in cases {
            let reply = await storage.call(operation, payload)
            #expect(reply.code == code, "\(operation) \(payload): \(reply.error?.description ?? "ok")")
            #expect(reply.error?.message.contains(message) == true, "\(operation) \(payload): \(reply.error?.message ?? "ok")")
            #expect(reply.error?.retryable == false)
        }
        // The id never shows in a message (it is what lets its holder write).
        let unknown = await storage.call("commit", ["upload": .string(String(repeating: "a", count: 32))])
        #expect(unknown.code == "UPLOAD_NOT_FOUND" && unknown.error?.message.contains("aaaa") == false)

        // A gap, an overlap and a wrong size are refused, and the upload stays open to fix.
        #expect(await storage.call("append", ["upload": .string(id), "offset": 4, "data": Self.base64([4, 5, 6])]).isOK)
        let gap = await storage.call("commit", ["upload": .string(id)])
        #expect(gap.code == "CONFLICT" && gap.error?.message.contains("bytes 0..<4 are missing") == true, "\(gap.error?.message ?? "")")
        #expect(await storage.call("append", ["upload": .string(id), "offset": 0, "data": Self.base64([0, 1, 2, 3, 4])]).isOK)
        let overlap = await storage.call("commit", ["upload": .string(id)])
        #expect(overlap.code == "CONFLICT" && overlap.error?.message.contains("overlap") == true, "\(overlap.error?.message ?? "")")
        #expect(await storage.call("append", ["upload": .string(id), "offset": 0, "data": Self.base64([0, 1, 2, 3])]).isOK)
        let size = await storage.call("commit", ["upload": .string(id), "size": 8])
        #expect(size.code == "CONFLICT" && size.error?.message.contains("holds 7 bytes, not payload.size 8") == true)
        #expect(await storage.call("commit", ["upload": .string(id), "size": 7])["size"] == 7)
        #expect(try await readAll(storage, "k").bytes == [0, 1, 2, 3, 4, 5, 6])
        // Committed: the id is spent.
        #expect(await storage.call("append", ["upload": .string(id), "offset": 7, "data": "AA=="]).code == "UPLOAD_NOT_FOUND")
        #expect(await storage.call("read", ["key": "k", "offset": 8]).code == "INVALID_PAYLOAD")

        // At most maxUploads open per namespace.
        _ = try await upload(storage, "a")
        _ = try await upload(storage, "b")
        let third = await storage.call("upload", ["key": "c"])
        #expect(third.code == "QUOTA_EXCEEDED" && third.error?.message.contains("config.maxUploads") == true)
        #expect(await storage.call("upload", ["key": "c"], caller: Caller(subject: "t", tenant: "other", actions: .all)).isOK)
    }

    @Test func versionsIfVersionTTLAndQuotaApplyToStreamsAsToJSONValues() async throws {
        let storage = try open(["maxBytes": 1000])
        #expect(await storage.call("save", ["key": "doc", "data": "json first"])["version"] == 1)
        let stale = try await upload(storage, "doc", options: ["ifVersion": 0])
        #expect(await storage.call("append", ["upload": .string(stale), "offset": 0, "data": Self.base64([1])]).isOK)
        let conflict = await storage.call("commit", ["upload": .string(stale)])
        #expect(conflict.code == "CONFLICT" && conflict.error?.message.contains("'doc' is at version 1, not ifVersion 0") == true)

        let id = try await upload(storage, "doc", options: ["ifVersion": 1])
        #expect(await storage.call("append", ["upload": .string(id), "offset": 0, "data": Self.base64([9, 9])]).isOK)
        #expect(await storage.call("commit", ["upload": .string(id)])["version"] == 2)
        // A read pinned to the old version fails rather than mixing values.
        let pinned = await storage.call("read", ["key": "doc", "version": 1])
        #expect(pinned.code == "CONFLICT" && pinned.error?.message.contains("changed while being read") == true)
        // A JSON save replaces the stream; the version goes on, after a delete too.
        #expect(await storage.call("save", ["key": "doc", "data": 3])["version"] == 3)
        #expect(await storage.call("delete", ["key": "doc"])["deleted"] == true)
        let again = try await upload(storage, "doc")
        #expect(await storage.call("commit", ["upload": .string(again)])["version"] == 4)

        // The quota: an append past it by itself; a save while an open upload holds the room
        // (openUploadsCountAgainstTheQuotaWithTheValues has more).
        let big = try await upload(storage, "big")
        #expect(await storage.call("append", ["upload": .string(big), "offset": 990, "data": Self.base64(Array(repeating: 1, count: 20))]).code == "QUOTA_EXCEEDED")
        #expect(await storage.call("append", ["upload": .string(big), "offset": 0, "data": Self.base64(Array(repeating: 1, count: 995))]).isOK)
        let over = await storage.call("save", ["key": "pad", "data": "0123456789"])
        #expect(over.code == "QUOTA_EXCEEDED" && over.error?.message.contains("past config.maxBytes 1000") == true, "\(over.error?.message ?? "")")
        #expect(await storage.call("commit", ["upload": .string(big)])["size"] == 995)

        // ttl counts from the commit; an expired stream is gone for every read.
        let short = try await upload(storage, "short", options: ["ttl": 1])
        #expect(await storage.call("append", ["upload": .string(short), "offset": 0, "data": Self.base64([1])]).isOK)
        #expect(await storage.call("commit", ["upload": .string(short)]).isOK)
        try await StorageExpiryTests.pass(2)
        #expect(await storage.call("read", ["key": "short"]).code == "KEY_NOT_FOUND")
        #expect(await storage.call("list", ["prefix": "short"])["keys"] == [])
    }

    /// Open uploads count against `maxBytes` with the values, per namespace: uploads that are
    /// never committed cannot hold more than the quota either.
    @Test func openUploadsCountAgainstTheQuotaWithTheValues() async throws {
        let storage = try open(["maxBytes": 1000])
        let bytes = Self.base64(Array(repeating: 1, count: 600))
        let first = try await upload(storage, "a")
        let second = try await upload(storage, "b")
        #expect(await storage.call("append", ["upload": .string(first), "offset": 0, "data": bytes]).isOK)
        let refused = await storage.call("append", ["upload": .string(second), "offset": 0, "data": bytes])
        #expect(
            refused.code == "QUOTA_EXCEEDED" && refused.error?.message.contains("0 bytes of values and 600 bytes of open uploads") == true,
            "\(refused.error?.message ?? "accepted")")
        // The same chunk again adds nothing; a save counts the open uploads too.
        #expect(await storage.call("append", ["upload": .string(first), "offset": 0, "data": bytes]).isOK)
        let save = await storage.call("save", ["key": "pad", "data": .string(String(repeating: "x", count: 500))])
        #expect(save.code == "QUOTA_EXCEEDED" && save.error?.message.contains("open uploads 600") == true, "\(save.error?.message ?? "accepted")")
        // Another tenant's quota is its own.
        let tenant = Caller(subject: "alice", tenant: "tenant-a", actions: .all)
        let theirs = try await upload(storage, "b", caller: tenant)
        #expect(await storage.call("append", ["upload": .string(theirs), "offset": 0, "data": bytes], caller: tenant).isOK)
        // Aborting frees the room; a committed value counts as a value, once.
        #expect(await storage.call("abort", ["upload": .string(first)]).isOK)
        #expect(await storage.call("append", ["upload": .string(second), "offset": 0, "data": bytes]).isOK)
        #expect(await storage.call("commit", ["upload": .string(second)])["size"] == 600)
        let third = try await upload(storage, "c")
        let past = await storage.call("append", ["upload": .string(third), "offset": 0, "data": Self.base64(Array(repeating: 2, count: 401))])
        #expect(past.code == "QUOTA_EXCEEDED" && past.error?.message.contains("600 bytes of values and 0 bytes of open uploads") == true, "\(past.error?.message ?? "accepted")")
        #expect(await storage.call("append", ["upload": .string(third), "offset": 0, "data": Self.base64(Array(repeating: 2, count: 400))]).isOK)
    }

    /// A file whose uploads table predates the count of bytes gets it, counting what its open
    /// uploads hold already.
    @Test func uploadsOpenInAFileFromBeforeTheirCountStillCount() async throws {
        let bytes = Self.base64(Array(repeating: 1, count: 600))
        do {
            let storage = try open()
            let id = try await upload(storage, "a")
            #expect(await storage.call("append", ["upload": .string(id), "offset": 0, "data": bytes]).isOK)
            storage.close()
            let file = try SQLiteConnection(path: directory.databasePath, readOnly: false, create: false, busyTimeoutMilliseconds: 5000)
            try file.execute("ALTER TABLE csop_storage_uploads DROP COLUMN bytes")
        }
        let storage = try open(["maxBytes": 1000])
        let other = try await upload(storage, "b")
        let refused = await storage.call("append", ["upload": .string(other), "offset": 0, "data": bytes])
        #expect(refused.code == "QUOTA_EXCEEDED" && refused.error?.message.contains("600 bytes of open uploads") == true, "\(refused.error?.message ?? "accepted")")
    }

    @Test func chunksNoKeyNeedsAreDeletedInTheBackground() async throws {
        let storage = try open(purgeInterval: 20)
        func stream(_ key: String) async throws -> String {
            let id = try await upload(storage, key)
            for index in 0..<3 {
                #expect(await storage.call("append", ["upload": .string(id), "offset": .int(Int64(index * 10)), "data": Self.base64(Self.bytes(10, seed: index))]).isOK)
            }
            return id
        }
        // Replaced, deleted, expired and aborted (left idle: the next test).
        #expect(await storage.call("commit", ["upload": .string(try await stream("replaced"))]).isOK)
        #expect(await storage.call("save", ["key": "replaced", "data": 1]).isOK)
        #expect(await storage.call("commit", ["upload": .string(try await stream("deleted"))]).isOK)
        #expect(await storage.call("delete", ["key": "deleted"])["deleted"] == true)
        let expiring = try await upload(storage, "expired", options: ["ttl": 1])
        #expect(await storage.call("append", ["upload": .string(expiring), "offset": 0, "data": Self.base64([1])]).isOK)
        #expect(await storage.call("commit", ["upload": .string(expiring)]).isOK)
        #expect(await storage.call("abort", ["upload": .string(try await stream("aborted"))])["aborted"] == true)
        let kept = try await stream("kept")
        #expect(await storage.call("commit", ["upload": .string(kept)]).isOK)

        // Everything but "kept" goes.
        for _ in 0..<2000 where try chunksInFile() > 3 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(try chunksInFile() == 3)
        #expect(try await readAll(storage, "kept").bytes == (0..<3).flatMap { Self.bytes(10, seed: $0) })
    }

    @Test func anUploadLeftByACrashedProcessIsCleanedUpByTheNextOne() async throws {
        let id: String
        do {
            let storage = try open()
            id = try await upload(storage, "half")
            #expect(await storage.call("append", ["upload": .string(id), "offset": 0, "data": Self.base64(Self.bytes(1000, seed: 1))]).isOK)
            storage.close()  // No commit: as if the process died.
        }
        #expect(try chunksInFile() == 1)
        let next = try open(purgeInterval: 20, ["uploadIdleTimeout": 1000])
        try await waitForNoChunks()
        #expect(await next.call("read", ["key": "half"]).code == "KEY_NOT_FOUND")
        // Its id is spent: the idle upload was ended.
        #expect(await next.call("commit", ["upload": .string(id)]).code == "UPLOAD_NOT_FOUND")
    }

    @Test func aTenantCannotUseAnothersUploadOrReadItsStreams() async throws {
        let storage = try open()
        let a = Caller(subject: "alice", tenant: "tenant-a", actions: .all)
        let b = Caller(subject: "bob", tenant: "tenant-b", actions: .all)
        let id = try await upload(storage, "secret", caller: a)
        for (operation, payload) in [
            ("append", ["upload": .string(id), "offset": 0, "data": "AA=="] as JSONValue), ("commit", ["upload": .string(id)]),
            ("abort", ["upload": .string(id)]),
        ] {
            #expect(await storage.call(operation, payload, caller: b).code == "UPLOAD_NOT_FOUND", "\(operation)")
            #expect(await storage.call(operation, payload).code == "UPLOAD_NOT_FOUND", "the owner: \(operation)")
        }
        #expect(await storage.call("append", ["upload": .string(id), "offset": 0, "data": Self.base64([7])], caller: a).isOK)
        #expect(await storage.call("commit", ["upload": .string(id)], caller: a)["key"] == "secret")
        #expect(await storage.call("read", ["key": "secret"], caller: b).code == "KEY_NOT_FOUND")
        #expect(await storage.call("read", ["key": "secret"]).code == "KEY_NOT_FOUND")
        #expect(await storage.call("read", ["key": "secret"], caller: a)["data"] == Self.base64([7]))
    }
}

/// A failed step of a test's own set-up.
struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
