import CSOPCore
import CSOPHost
import CSOPServe
import CSOPTestSupport
import HTTPTypes
import Testing

/// Streamed storage values through the Swift API (`saveStream`, `readStream`) and the
/// gateway's `PUT`/`GET /v1/streams/{key}`, against a real host and a real HTTP server.
@Suite struct StreamGatewayTests {
    /// Bytes that differ at every position (a pattern cheap in a debug build).
    static func bytes(_ count: Int, seed: UInt8) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        result.withUnsafeMutableBufferPointer { buffer in
            for i in 0..<count { buffer[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 8 &+ Int(seed)) }
        }
        return result
    }

    /// Yields `bytes` in pieces of `size`, then throws `failure` if given.
    struct Pieces: AsyncSequence, Sendable {
        typealias Element = [UInt8]
        let bytes: [UInt8]
        let size: Int
        var failure: CSOPError?

        func makeAsyncIterator() -> Iterator { Iterator(pieces: self) }

        struct Iterator: AsyncIteratorProtocol {
            let pieces: Pieces
            var at = 0
            mutating func next() async throws -> [UInt8]? {
                guard at < pieces.bytes.count else {
                    if let failure = pieces.failure { throw failure }
                    return nil
                }
                let end = Swift.min(at + pieces.size, pieces.bytes.count)
                defer { at = end }
                return Array(pieces.bytes[at..<end])
            }
        }
    }

    /// Each step's timeout: generous, as the whole suite may be running on two cores.
    static let step = 60_000.0

    static func collect(_ stream: StoredValueStream) async throws(CSOPError) -> [UInt8] {
        var result: [UInt8] = []
        for try await slice in stream { result += slice }
        return result
    }

    @Test func theSwiftAPISavesAndReadsAValueOfAnySizeInPieces() async throws {
        let setup = try ServeSetup()
        let host = await setup.host()
        // Pieces that do not line up with the 1 MiB appends.
        let value = Self.bytes(2 * CSOPHost.streamChunkBytes + 12_345, seed: 1)
        let saved = try await host.saveStream("movie", from: Pieces(bytes: value, size: 700_001), ttl: 3_600_000, timeout: Self.step)
        #expect(saved == ["key": "movie", "location": "stream", "size": .int(Int64(value.count)), "version": 1])
        #expect(try await Self.collect(host.readStream("movie", timeout: Self.step)) == value)

        // A source that fails halfway saves nothing: the key keeps its value, the upload is aborted.
        let broken = Pieces(bytes: Self.bytes(2 * CSOPHost.streamChunkBytes, seed: 2), size: 1 << 20, failure: CSOPError(.cancelled, "the source broke"))
        await #expect(throws: CSOPError.self) { _ = try await host.saveStream("movie", from: broken, timeout: Self.step) }
        #expect(try await Self.collect(host.readStream("movie", timeout: Self.step)) == value)
        // ifVersion is checked at the commit.
        await #expect(throws: CSOPError.self) { _ = try await host.saveStream("movie", from: Pieces(bytes: [1], size: 1), ifVersion: 7, timeout: Self.step) }

        // A value that changes while it is read fails the read instead of mixing two versions.
        // (A slice read ahead before the change is still of the old version.)
        var slices = host.readStream("movie", timeout: Self.step).makeAsyncIterator()
        var got = try await slices.next() ?? []
        #expect(got.count == CSOPHost.streamChunkBytes)
        #expect(slices.size == Int64(value.count) && slices.version == 1)
        _ = try await host.saveStream("movie", from: Pieces(bytes: [9, 9, 9], size: 3), timeout: Self.step)
        do {
            while let slice = try await slices.next() { got += slice }
            Issue.record("a read across a change went on to the end")
        } catch {
            #expect(error.code.rawValue == "CONFLICT", "\(error)")
            #expect(got.count < value.count && value.starts(with: got), "the slices before the conflict are not the old value's")
        }
        #expect(try await Self.collect(host.readStream("movie", timeout: Self.step)) == [9, 9, 9])
        do {
            _ = try await Self.collect(host.readStream("missing", timeout: Self.step))
            Issue.record("a missing key read as a value")
        } catch {
            #expect(error.code.rawValue == "KEY_NOT_FOUND", "\(error)")
        }
        await host.shutdown()
    }

    /// Runs one exchange; a failure names it (and how long it took) before it ends the test.
    func step<T>(_ label: String, _ body: () async throws -> T) async throws -> T {
        let start = ContinuousClock.now
        do {
            return try await body()
        } catch {
            Issue.record("\(label) failed after \(ContinuousClock.now - start): \(error)")
            throw error
        }
    }

    @Test func putAndGetStreamABodyOfAnySizeWithTheTokensTenantAndActions() async throws {
        let setup = try ServeSetup()
        let writer = try await setup.token("alice", actions: ["storage.*"], tenant: "acme")
        let reader = try await setup.token("carol", actions: ["storage.read"], tenant: "acme")
        let other = try await setup.token("bob", actions: ["storage.*"], tenant: "globex")
        try await withGateway(setup, configure: { $0.secretFile = setup.secretFile }) { port, _ in
            let http = HTTP(port: port)
            let value = Self.bytes(2 * CSOPHost.streamChunkBytes + 77, seed: 3)
            // A transfer takes several steps through the plugin, each a few hops on the
            // concurrency pool, which the suite's own tests can starve for seconds at its start:
            // the client waits as long as the server's steps may take.
            let put = try await step("PUT") {
                try await http.request(.put, "/v1/streams/photos%2Fcat%20one.jpg?ttl=60000", bytes: value, token: writer, readTimeout: .seconds(120))
            }
            #expect(put.status == .ok, "\(put.text)")
            #expect(put.data == ["key": "photos/cat one.jpg", "location": "stream", "size": .int(Int64(value.count)), "version": 1])

            let get = try await step("GET") {
                try await http.request(.get, "/v1/streams/photos%2Fcat%20one.jpg", bytes: nil, token: reader, readTimeout: .seconds(120))
            }
            #expect(get.status == .ok)
            #expect(get.headers[.contentType] == "application/octet-stream")
            #expect(get.headers[.contentLength] == String(value.count))
            #expect(get.headers[.eTag] == "\"1\"")
            #expect(get.body == value)

            // Another tenant sees nothing; a token without the upload actions cannot write.
            #expect(try await step("GET by another tenant") { try await http.get("/v1/streams/photos%2Fcat%20one.jpg", token: other) }.status == .notFound)
            let refused = try await step("PUT refused") { try await http.request(.put, "/v1/streams/x", bytes: [1, 2, 3], token: reader) }
            #expect(refused.status == .forbidden && refused.code == "FORBIDDEN", "\(refused.text)")
            #expect(try await http.get("/v1/streams/x", token: writer).status == .notFound)
            #expect(try await http.get("/v1/streams/x").status == .unauthorized)

            // Bad requests are answered before any body is stored.
            let cases: [(HTTPRequest.Method, String, HTTPResponse.Status, String)] = [
                (.put, "/v1/streams/k?ttl=soon", .badRequest, "INVALID_PAYLOAD"),
                (.put, "/v1/streams/k?color=red", .badRequest, "INVALID_PAYLOAD"),
                (.put, "/v1/streams/k?ifVersion=3", .conflict, "CONFLICT"),
                (.put, "/v1/streams/%ZZ", .badRequest, "INVALID_PAYLOAD"),
                (.get, "/v1/streams/k?offset=1", .badRequest, "INVALID_PAYLOAD"),
            ]
            for (method, path, status, code) in cases {
                let reply = try await step("\(method) \(path)") { try await http.request(method, path, bytes: method == .put ? [1] : nil, token: writer) }
                #expect(reply.status == status && reply.code == code, "\(method) \(path): \(reply.status) \(reply.text)")
            }
            // A JSON value is not a stream, and the other way round.
            #expect(try await http.post("/v1/storage/save", #"{"key":"doc","data":1}"#, token: writer).status == .ok)
            #expect(try await http.get("/v1/streams/doc", token: writer).code == "NOT_STREAMED")
            let json = try await http.post("/v1/storage/get", #"{"key":"photos/cat one.jpg"}"#, token: writer)
            #expect(json.status == .conflict && json.code == "STREAMED_VALUE", "\(json.text)")
            // An empty body is an empty value.
            #expect(try await http.request(.put, "/v1/streams/empty", bytes: [], token: writer).data?["size"] == 0)
            let empty = try await http.get("/v1/streams/empty", token: writer)
            #expect(empty.status == .ok && empty.body.isEmpty && empty.headers[.contentLength] == "0")
        }
    }
}
