import CSOPCore
import CSOPHost
import CSOPServe
import CSOPTestSupport
import HTTPTypes
import Testing

/// `POST /v1/dispatch`, `POST /v1/{domain}/{operation}`, health, the status table, limits
/// and CORS, against a real gateway on loopback.
@Suite struct HTTPGatewayTests {
    @Test func dispatchTakesARequestLineAndAnswersTheResponseLine() async throws {
        let setup = try ServeSetup()
        try await withGateway(setup) { port, _ in
            let http = HTTP(port: port)
            let one = try await http.post("/v1/dispatch", #"{"id":"r1","action":"diag.echo","payload":{"a":[1,2.5,"x"]}}"#)
            #expect(one.status == .ok)
            #expect(one.headers[.contentType] == "application/json")
            #expect(one.text.hasPrefix(#"{"id":"r1","status":"ok","data":{"a":[1,2.5,"x"]},"duration":"#))
            #expect(!one.text.contains("\n"))

            let batch = try await http.post(
                "/v1/dispatch",
                #"[{"id":"a","action":"diag.sleep","payload":{"ms":50}},{"id":"b","action":"nodot"},{"id":"c","action":"diag.noop"}]"#)
            #expect(batch.status == .ok)
            guard case .array(let items) = batch.json else { Issue.record("not an array: \(batch.text)"); return }
            #expect(items.map { $0["id"] } == [.string("a"), .string("b"), .string("c")])
            #expect(items.map { $0["status"] } == [.string("ok"), .string("error"), .string("ok")])

            for (body, code) in [
                ("[]", "INVALID_PAYLOAD"), ("{", "INVALID_PAYLOAD"), (#"{"action":"diag.noop","bogus":1}"#, "INVALID_PAYLOAD"),
                ("42", "INVALID_PAYLOAD"), (#"{"payload":{}}"#, "INVALID_ACTION"),
            ] {
                let reply = try await http.post("/v1/dispatch", body)
                #expect(reply.status == .badRequest, "\(body): \(reply.text)")
                #expect(reply.code == code, "\(body): \(reply.text)")
            }
        }
    }

    @Test func statusFollowsTheErrorCode() async throws {
        let setup = try ServeSetup()
        try await withGateway(setup) { port, _ in
            let http = HTTP(port: port)
            let cases: [(String, HTTPResponse.Status)] = [
                ("INVALID_KEY", .badRequest), ("KEY_NOT_FOUND", .notFound), ("CONFLICT", .conflict), ("QUOTA_EXCEEDED", .contentTooLarge),
                ("QUEUE_FULL", .tooManyRequests), ("NOT_CONNECTED", .serviceUnavailable), ("NOT_INITIALIZED", .serviceUnavailable),
                ("TIMEOUT", .gatewayTimeout), ("EXECUTION_FAILED", .internalServerError), ("FORBIDDEN", .forbidden),
                ("UNAUTHENTICATED", .unauthorized), ("PLUGIN_FAULT", .internalServerError),
            ]
            for (code, status) in cases {
                // It fails at once; the long timeout keeps a loaded machine's wait from answering TIMEOUT.
                let reply = try await http.post("/v1/diag/fail?timeout=60000", #"{"code":"\#(code)","message":"asked to"}"#)
                #expect(reply.status == status, "\(code): \(reply.text)")
                #expect(reply.code == code)
                if status == .tooManyRequests || status == .serviceUnavailable {
                    #expect(reply.headers[.retryAfter] != nil, "\(code) has no Retry-After")
                }
            }
            // Real ones, not asked for.
            #expect(try await http.post("/v1/storage/get", #"{"key":"missing"}"#).status == .notFound)
            #expect(try await http.post("/v1/nosuch/op", "{}").code == "CAPABILITY_NOT_FOUND")
            #expect(try await http.post("/v1/diag/nosuch", "{}").status == .notFound)
            let slow = try await http.post("/v1/diag/sleep?timeout=20", #"{"ms":2000}"#)
            #expect(slow.status == .gatewayTimeout, "\(slow.text)")
            #expect(slow.code == "TIMEOUT")
            let nowhere = try await http.get("/nowhere")
            #expect(nowhere.status == .notFound)
            #expect(nowhere.code == "ROUTE_NOT_FOUND")
        }
    }

    @Test func actionRouteTakesThePayloadAndOptionsFromTheQuery() async throws {
        let setup = try ServeSetup()
        try await withGateway(setup) { port, _ in
            let http = HTTP(port: port)
            let saved = try await http.post("/v1/storage/save?timeout=2000&retry=1", #"{"key":"k1","data":{"n":1}}"#)
            #expect(saved.status == .ok, "\(saved.text)")
            let got = try await http.post("/v1/storage/get", #"{"key":"k1"}"#)
            #expect(got.data == .object(["n": 1]))
            // An empty body is an empty payload.
            #expect(try await http.post("/v1/diag/noop", "").status == .ok)
            for (query, fragment) in [("?bogus=1", "unknown query parameter"), ("?timeout=soon", "must be a number"), ("?timeout=0", "timeout")] {
                let reply = try await http.post("/v1/diag/noop\(query)", "{}")
                #expect(reply.status == .badRequest, "\(query): \(reply.text)")
                #expect(reply.text.contains(fragment), "\(query): \(reply.text)")
            }
            let subscribe = try await http.post("/v1/sync/subscribe", #"{"channel":"c"}"#)
            #expect(subscribe.status == .badRequest)
            #expect(subscribe.text.contains("/v1/ws"))
            let watch = try await http.post("/v1/storage/watch", #"{"prefix":"a"}"#)
            #expect(watch.status == .badRequest)
            #expect(watch.text.contains("storage.watch needs a connection"))
        }
    }

    @Test func bodiesOverTheLimitAreRefusedWith413() async throws {
        let setup = try ServeSetup()
        try await withGateway(setup, configure: { $0.maxBodyBytes = 4096 }) { port, _ in
            let http = HTTP(port: port)
            let big = #"{"action":"diag.echo","payload":{"s":""# + String(repeating: "x", count: 8000) + #""}}"#
            let reply = try await http.post("/v1/dispatch", big)
            #expect(reply.status == .contentTooLarge)
            #expect(reply.code == "PAYLOAD_TOO_LARGE")
            #expect(reply.text.contains("4096"))
            // The server still answers.
            #expect(try await http.post("/v1/dispatch", #"{"action":"diag.noop"}"#).status == .ok)
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrderOnOneConnection() async throws {
        let setup = try ServeSetup()
        try await withGateway(setup, configure: { $0.maxBodyBytes = 4096 }) { port, _ in
            // A slow dispatch, a request for the router, a quick dispatch, a body over the
            // limit (read and dropped, then 413), and a last dispatch: all in one write.
            func post(_ path: String, _ body: String) -> String {
                "POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            }
            let big = String(repeating: "x", count: 6000)
            let socket = try RawSocket(port: port)
            socket.send(
                post("/v1/dispatch", #"{"id":"slow","action":"diag.sleep","payload":{"ms":200}}"#)
                    + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    + post("/v1/diag/echo", #"{"marker":"quick"}"#)
                    + post("/v1/dispatch", big)
                    + post("/v1/dispatch", #"{"id":"last","action":"diag.noop"}"#))
            let all = try await socket.read(until: #""id":"last""#)
            let text = all.text
            let order = [#""id":"slow""#, #"{"status":"ok"}"#, #""marker":"quick""#, "PAYLOAD_TOO_LARGE", #""id":"last""#].map {
                text.range(of: $0)?.lowerBound
            }
            #expect(order.allSatisfy { $0 != nil }, "\(text)")
            let found = order.compactMap { $0 }
            #expect(found == found.sorted(), "answers out of order: \(text)")
            #expect(text.components(separatedBy: "HTTP/1.1 ").count == 6, "\(text)")
            #expect(text.contains("HTTP/1.1 413"))
            // A request in pieces, split inside its blank line and its body, is read whole.
            let noop = #"{"id":"n","action":"diag.noop"}"#
            let request = post("/v1/dispatch", noop)
            let pieces = try RawSocket(port: port)
            let cut = request.range(of: "\r\n\r\n")!.upperBound
            let parts = [
                String(request[..<request.index(cut, offsetBy: -2)]), String(request[request.index(cut, offsetBy: -2)..<request.index(cut, offsetBy: 3)]),
                String(request[request.index(cut, offsetBy: 3)...]),
            ]
            for part in parts {
                pieces.send(part)
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await pieces.read(until: #""id":"n""#).text.hasPrefix("HTTP/1.1 200"))
            // Connection: close is honoured.
            let closing = try RawSocket(port: port)
            closing.send("POST /v1/dispatch HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 22\r\n\r\n{\"action\":\"diag.noop\"}")
            let closed = try await closing.read(until: nil)
            #expect(closed.closed && closed.text.hasPrefix("HTTP/1.1 200") && closed.text.lowercased().contains("connection: close"), "\(closed.text)")
            // On NIO's path too (a chunked body goes there), with close among other tokens.
            let chunkedClosing = try RawSocket(port: port)
            chunkedClosing.send(
                "POST /v1/dispatch HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + "16\r\n{\"action\":\"diag.noop\"}\r\n0\r\n\r\n")
            let chunkedClosed = try await chunkedClosing.read(until: nil)
            #expect(chunkedClosed.closed && chunkedClosed.text.hasPrefix("HTTP/1.1 200") && chunkedClosed.text.lowercased().contains("connection: close"), "\(chunkedClosed.text)")
        }
    }

    @Test func dispatchesReadFromTheBytesKeepTheLimitsAndHandOverTheRest() async throws {
        let setup = try ServeSetup()
        // 2 s, not less: a connection's first head is due that long after it opens, and with
        // 0.5 s a full-suite run once closed this first request's connection unanswered.
        try await withGateway(setup, configure: { $0.idleTimeout = 2; $0.headerTimeout = 2 }) { port, _ in
            let noop = #"{"id":"n","action":"diag.noop"}"#
            let request = "POST /v1/dispatch HTTP/1.1\r\nHost: x\r\nContent-Length: \(noop.utf8.count)\r\n\r\n\(noop)"
            // A connection that only dispatched and then waits is closed after the idle timeout.
            let idle = try RawSocket(port: port)
            idle.send(request)
            let answer = try await idle.read(until: #""id":"n""#)
            #expect(answer.text.hasPrefix("HTTP/1.1 200"), "closed: \(answer.closed), read: \(answer.text)")
            #expect(try await idle.read(until: nil).closed, "an idle dispatching connection outlived --idle-timeout")
            // A second head dribbled is cut off (slow loris after a first request).
            let slow = try RawSocket(port: port)
            slow.send(request)
            #expect(try await slow.read(until: #""id":"n""#).text.hasPrefix("HTTP/1.1 200"))
            slow.send("POST /v1/dispatch HTTP/1.1\r\n")
            #expect(try await slow.dribbleUntilClosed(), "a second head dribbled for 8 s was not cut off")
            // What the raw path does not read (chunked bodies, odd headers) is NIO's, and works.
            let chunked = try RawSocket(port: port)
            let first = #"{"id":"c","action":"diag.noop"}"#
            let hex = String(first.utf8.count, radix: 16)
            chunked.send("POST /v1/dispatch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\(hex)\r\n\(first)\r\n0\r\n\r\n" + request)
            let both = try await chunked.read(until: #""id":"n""#).text
            let c = both.range(of: #""id":"c""#)?.lowerBound, n = both.range(of: #""id":"n""#)?.lowerBound
            #expect(c != nil && n != nil && c! < n!, "\(both)")
            #expect(both.components(separatedBy: "HTTP/1.1 200").count == 3, "\(both)")
        }
    }

    @Test(arguments: [
        "POST /v1/dispatch HTTP/1.1\r\nHost: x\nX: y\r\nContent-Length: 2\r\n\r\n{}",  // a bare LF is not guessed at
        "GARBAGE\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        "POST /v1/dispatch HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "POST /v1/dispatch HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
        "POST /v1/dispatch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\nConnection: Upgrade\r\n\r\n",
    ])
    func malformedRequestsAreAnswered400AndClosed(request: String) async throws {
        let setup = try ServeSetup()
        try await withGateway(setup) { port, _ in
            // Alone, and after a good request on the same connection (which is answered first).
            for prefix in ["", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"] {
                let socket = try RawSocket(port: port)
                socket.send(prefix + request)
                let reply = try await socket.read(until: nil)
                #expect(reply.closed, "no answer and not closed: \(reply.text)")
                // Status lines start the text or follow a JSON body.
                let statuses = reply.text.matches(of: #/(?:^|\})HTTP/1\.1 (\d{3}) /#).map { String($0.output.1) }
                #expect(statuses == (prefix.isEmpty ? ["400"] : ["200", "400"]), "\(reply.text)")
                #expect(reply.text.contains("Connection: close"), "\(reply.text)")
                let body = reply.text.components(separatedBy: "\r\n\r\n").last ?? ""
                let response = try JSONValue(parsing: Array(body.utf8))
                #expect(response["error"]?["code"] == "INVALID_HTTP", "\(body)")
                #expect(response["error"]?["message"]?.stringValue?.contains("not well-formed HTTP/1.1") == true, "\(body)")
            }
        }
    }

    @Test func healthAndReadiness() async throws {
        let setup = try ServeSetup()
        try await withGateway(setup) { port, _ in
            let http = HTTP(port: port)
            #expect(try await http.get("/healthz").status == .ok)
            let ready = try await http.get("/readyz")
            #expect(ready.status == .ok)
            #expect(ready.text.contains(#""name":"storage""#) && ready.text.contains(#""state":"ready""#))
        }
        // A plugins.d entry that does not load: not ready, and the body says which.
        try PluginEntry("50-broken.conf", library: "/nonexistent/libcsop-broken.so").text.write(
            toFile: "\(setup.pluginsDirectory)/50-broken.conf", atomically: true, encoding: .utf8)
        try await withGateway(setup) { port, _ in
            let ready = try await HTTP(port: port).get("/readyz")
            #expect(ready.status == .serviceUnavailable)
            #expect(ready.text.contains("50-broken.conf") && ready.text.contains(#""state":"failed""#))
            #expect(try await HTTP(port: port).get("/healthz").status == .ok)
        }
    }

    @Test func readinessAsksEachPluginsHealth() async throws {
        // PostgreSQL up: the cold tier and the sync cluster are ready.
        let up = try ServeSetup(
            storage: ["postgresUrl": .string(TestEnvironment.postgresURL), "postgresTable": "csop_gateway_ready"],
            sync: ["postgresUrl": .string(TestEnvironment.postgresURL), "clusterChannel": "csop_gateway_ready"])
        try await withGateway(up) { port, _ in
            var ready = try await HTTP(port: port).get("/readyz")
            // The cluster connects in the background: give it a moment.
            for _ in 0..<100 where ready.status != .ok {
                try await Task.sleep(for: .milliseconds(100))
                ready = try await HTTP(port: port).get("/readyz")
            }
            #expect(ready.status == .ok, "\(ready.text)")
        }
        // Nothing listens on port 1: both are not ready, and say why.
        let down = "postgres://csop@127.0.0.1:1/csop"
        let broken = try ServeSetup(storage: ["postgresUrl": .string(down)], sync: ["postgresUrl": .string(down)])
        try await withGateway(broken) { port, _ in
            let ready = try await HTTP(port: port).get("/readyz")
            #expect(ready.status == .serviceUnavailable, "\(ready.text)")
            guard case .array(let plugins)? = ready.json["plugins"] else { Issue.record("no plugins: \(ready.text)"); return }
            let states = Dictionary(uniqueKeysWithValues: plugins.compactMap { plugin -> (String, JSONValue)? in
                guard case .string(let name)? = plugin["name"] else { return nil }
                return (name, plugin)
            })
            #expect(states["storage"]?["state"] == .string("not ready"), "\(ready.text)")
            #expect(states["sync"]?["state"] == .string("not ready"), "\(ready.text)")
            #expect(states["diag"]?["state"] == .string("ready"))
            #expect(states["storage"]?["detail"] != nil && states["sync"]?["detail"] != nil)
            #expect(!ready.text.contains("csop@"), "a URL's user reached the body: \(ready.text)")
        }
    }

    @Test func corsAllowsListedOriginsAndOtherSitesAreRefused() async throws {
        let setup = try ServeSetup()
        try await withGateway(setup, configure: { $0.corsOrigins = ["https://app.example"] }) { port, _ in
            let http = HTTP(port: port)
            let noop = #"{"action":"diag.noop"}"#
            let allowed = try await http.post("/v1/dispatch", noop, headers: [.origin: "https://app.example"])
            #expect(allowed.status == .ok)
            #expect(allowed.headers[.accessControlAllowOrigin] == "https://app.example")
            let preflight = try await http.request(
                .options, "/v1/dispatch", headers: [.origin: "https://app.example", .accessControlRequestMethod: "POST"])
            #expect(preflight.status == .noContent)
            #expect(preflight.headers[.accessControlAllowHeaders]?.contains("Authorization") == true)
            let other = try await http.post("/v1/dispatch", noop, headers: [.origin: "https://evil.example"])
            #expect(other.status == .forbidden)
            #expect(other.code == "FORBIDDEN")
            #expect(other.headers[.accessControlAllowOrigin] == nil)
            // Same origin, and programs without Origin, pass.
            #expect(try await http.post("/v1/dispatch", noop, headers: [.origin: "http://127.0.0.1:\(port)", HTTPField.Name("Host")!: "127.0.0.1:\(port)"]).status == .ok)
            #expect(try await http.post("/v1/dispatch", noop).status == .ok)
            // The client module can be loaded from anywhere.
            let script = try await http.get("/v1/csop.js", headers: [.origin: "https://evil.example"])
            #expect(script.status == .ok)
            #expect(script.headers[.contentType]?.hasPrefix("text/javascript") == true)
            #expect(script.text.contains("export class CSOP"))
        }
        // No origins configured: a cross-site page gets nothing.
        try await withGateway(setup) { port, _ in
            let reply = try await HTTP(port: port).post("/v1/diag/noop", "{}", headers: [.origin: "https://app.example"])
            #expect(reply.status == .forbidden)
        }
    }

    @Test func rateLimitAnswers429WithRetryAfter() async throws {
        let setup = try ServeSetup()
        // A refill too slow to matter however long the requests take on a loaded machine.
        try await withGateway(setup, configure: { $0.rateLimit = 0.001; $0.rateBurst = 3 }) { port, _ in
            let http = HTTP(port: port)
            var statuses: [HTTPResponse.Status] = []
            for _ in 0..<5 { statuses.append(try await http.post("/v1/diag/noop", "{}").status) }
            #expect(statuses.prefix(3).allSatisfy { $0 == .ok })
            let limited = try await http.post("/v1/diag/noop", "{}")
            #expect(limited.status == .tooManyRequests)
            #expect(limited.code == "RATE_LIMITED")
            #expect(Int(limited.headers[.retryAfter] ?? "") ?? 0 >= 1)
            // A batch counts each request.
            let batch = try await http.post("/v1/dispatch", #"[{"action":"diag.noop"},{"action":"diag.noop"}]"#)
            #expect(batch.status == .tooManyRequests)
        }
    }

    @Test func statusMapCoversEveryRow() {
        let table: [(String?, HTTPResponse.Status)] = [
            (nil, .ok), ("INVALID_ACTION", .badRequest), ("INVALID_TASK", .badRequest), ("UNAUTHENTICATED", .unauthorized),
            ("FORBIDDEN", .forbidden), ("KEY_NOT_FOUND", .notFound), ("ROUTE_NOT_FOUND", .notFound), ("CONFLICT", .conflict),
            ("PAYLOAD_TOO_LARGE", .contentTooLarge), ("QUEUE_FULL", .tooManyRequests), ("RATE_LIMITED", .tooManyRequests),
            ("NOT_CONNECTED", .serviceUnavailable), ("NOT_INITIALIZED", .serviceUnavailable), ("CIRCUIT_OPEN", .serviceUnavailable),
            ("TIMEOUT", .gatewayTimeout),
            ("CANCELLED", .internalServerError), ("SAVE_FAILED", .internalServerError),
        ]
        for (code, status) in table {
            #expect(HTTPStatusMap.status(for: code.map { ErrorCode($0) }) == status, "\(code ?? "ok")")
        }
    }
}
