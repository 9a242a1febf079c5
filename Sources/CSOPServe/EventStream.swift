import CSOPCore
import CSOPHost
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import ServiceLifecycle

/// `GET /v1/events`: one sync subscription as Server-Sent Events, for clients that only
/// listen (`EventSource`, `curl -N`). The first message is `event: subscribed` with the
/// subscribe response; each sync event follows as a `data:` line holding its JSON; a comment
/// line every 15 s keeps proxies from closing the stream. The subscription ends when the
/// client goes away or the server stops (the stream then ends with `event: close`).
struct EventStream {
    let services: GatewayServices
    let caller: Caller?
    static let keepAlive: Duration = .seconds(15)

    func start(payload: JSONObject) async -> HTTPReply {
        let outbox = Outbox(maxEventBytes: WebSocketConnection.maxEventBytes)
        let scope = ConnectionScope(host: services.host, router: services.router, caller: caller, sink: outbox)
        let request = CSOPRequest(action: "sync.subscribe", payload: .object(payload))
        let subscribed: CSOPResponse? = await withUnsafeContinuation { continuation in
            // A successful subscribe's response goes to the outbox first; a failed one comes here.
            scope.dispatch(request) { continuation.resume(returning: $0) }
        }
        if let subscribed, !subscribed.isOK {
            scope.close()
            return HTTPRoutes.reply(subscribed)
        }
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", .init("X-Accel-Buffering")!: "no"]
        return HTTPReply(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                defer {
                    scope.close()
                    outbox.close()
                }
                try await withTaskCancellationHandler {
                    try await withGracefulShutdownHandler {
                        try await Self.pump(outbox, first: true, into: &writer)
                    } onGracefulShutdown: {
                        outbox.close()
                    }
                } onCancel: {
                    outbox.close()
                }
                try await writer.finish(nil)
            })
    }

    private static func pump(_ outbox: Outbox, first: Bool, into writer: inout any ResponseBodyWriter) async throws {
        var isFirst = first
        let ticker = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: keepAlive)
                outbox.push([])
            }
        }
        defer { ticker.cancel() }
        while true {
            switch await outbox.next() {
            case .frames(let frames, _):
                var buffer = ByteBuffer()
                for frame in frames {
                    if frame.isEmpty {
                        buffer.writeString(": keep-alive\n\n")
                    } else {
                        buffer.writeString(isFirst ? "event: subscribed\ndata: " : "data: ")
                        buffer.writeBytes(frame)
                        buffer.writeString("\n\n")
                        isFirst = false
                    }
                }
                try await writer.write(buffer)
            case .overflowed:
                try await writer.write(ByteBuffer(string: "event: close\ndata: {\"reason\":\"events arrived faster than this client read them\"}\n\n"))
                return
            case .closed:
                try await writer.write(ByteBuffer(string: "event: close\ndata: {\"reason\":\"the server is stopping\"}\n\n"))
                return
            }
        }
    }
}
