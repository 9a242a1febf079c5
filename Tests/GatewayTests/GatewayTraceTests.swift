import CSOPCore
import CSOPHost
import CSOPServe
import CSOPTestSupport
import Foundation
import HTTPTypes
import Testing

/// W3C `traceparent` and `tracestate` headers through a real gateway reach the plugin (the C
/// fixture's `hello.trace` answers what its `csop_call` carried), on the raw dispatch path and
/// on NIO's; a request's own `trace` field wins; a malformed header is ignored.
@Suite struct GatewayTraceTests {
    static let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    static let other = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    @Test func traceHeadersReachThePlugin() async throws {
        let setup = try ServeSetup()
        try await CCompiler.buildPlugin("hello.c", output: setup.directory.file("libhello.so"))
        try setup.directory.writePlugins(
            [PluginEntry("50-hello.conf", library: setup.directory.file("libhello.so"))], directory: "plugins.d")
        try await withGateway(setup) { port, _ in
            let http = HTTP(port: port)
            let body = #"{"action":"hello.trace","options":{"timeout":600000}}"#
            func trace(_ headers: HTTPFields, body: String = body) async throws -> JSONValue? {
                let reply = try await http.post("/v1/dispatch", body, headers: headers)
                #expect(reply.status == .ok, "\(reply.text)")
                return reply.data
            }
            var one = HTTPFields()
            one[HTTPField.Name("traceparent")!] = Self.parent
            one[HTTPField.Name("tracestate")!] = "congo=t61rcWkgMzE"
            #expect(try await trace(one) == ["traceparent": .string(Self.parent), "tracestate": "congo=t61rcWkgMzE"])
            // Two tracestate lines: NIO's parser reads the head; they make one list.
            var two = HTTPFields()
            two[HTTPField.Name("traceparent")!] = Self.parent
            two.append(HTTPField(name: HTTPField.Name("tracestate")!, value: "a=1"))
            two.append(HTTPField(name: HTTPField.Name("tracestate")!, value: "b=2"))
            #expect(try await trace(two) == ["traceparent": .string(Self.parent), "tracestate": "a=1,b=2"])
            // The request's own field wins over the header.
            let own = #"{"action":"hello.trace","trace":"\#(Self.other)","options":{"timeout":600000}}"#
            #expect(try await trace(one, body: own)?["traceparent"] == .string(Self.other))
            // A malformed header is ignored, as W3C Trace Context asks; a malformed field is an error.
            var bad = HTTPFields()
            bad[HTTPField.Name("traceparent")!] = "00-nothex-01"
            #expect(try await trace(bad) == ["traceparent": .null, "tracestate": .null])
            let refused = try await http.post("/v1/dispatch", #"{"action":"hello.trace","trace":"00-nothex-01"}"#)
            #expect(refused.status == .badRequest && refused.code == "INVALID_PAYLOAD", "\(refused.text)")
        }
    }
}
