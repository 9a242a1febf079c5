import CSOPCLISupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOCore

/// The baselines' servers: plain Hummingbird with none of the gateway's work.
enum BareServers {
    /// `POST /v1/dispatch` that reads the body and answers `response` as JSON.
    static func http(response: [UInt8]) async throws -> RunningServer {
        try await RunningServer.start { listening in
            let router = Router()
            router.post("v1/dispatch") { request, _ -> Response in
                _ = try await request.body.collect(upTo: 1 << 20)
                return Response(
                    status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: response)))
            }
            let app = Application(
                router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: nil),
                onServerRunning: { listening($0.localAddress?.port ?? 0) }, logger: GatewayBench.quietLogger)
            try await app.run()
        }
    }

    /// A WebSocket at `/v1/ws` that echoes every text message.
    static func webSocketEcho() async throws -> RunningServer {
        try await RunningServer.start { listening in try await runWebSocketEcho(onListening: listening) }
    }

    private static func runWebSocketEcho(onListening: @escaping @Sendable (Int) -> Void) async throws {
        let router = Router(context: BasicWebSocketRequestContext.self)
        router.ws("v1/ws") { inbound, outbound, _ in
            for try await message in inbound.messages(maxSize: 1 << 20) {
                if case .text(let text) = message { try await outbound.write(.text(text)) }
            }
        }
        let app = Application(
            router: router, server: .http1WebSocketUpgrade(webSocketRouter: router),
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: nil),
            onServerRunning: { onListening($0.localAddress?.port ?? 0) }, logger: GatewayBench.quietLogger)
        try await app.run()
    }

    /// `csop-bench --bare-websocket-server`: the echo server as a child process (for the
    /// memory baseline). Prints `listening PORT` to stdout; ends when stdin closes.
    static func serveWebSocketEchoUntilStdinCloses() async throws {
        let server = try await webSocketEcho()
        printLine("listening \(server.port)")
        try await onThread {
            var byte: UInt8 = 0
            while read(0, &byte, 1) > 0 {}
        }
        await server.stop()
    }
}
